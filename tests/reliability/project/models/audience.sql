select * from {{ source('raw', 'raw_audience') }}
