"""dbt-emarsys-sync: push dbt models to SAP Emarsys contacts and contact lists."""

__version__ = "0.1.0"
