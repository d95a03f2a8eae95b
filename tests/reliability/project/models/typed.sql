select * from {{ source('raw', 'raw_typed') }}
