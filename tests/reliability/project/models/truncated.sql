select * from {{ source('raw', 'raw_people') }}
