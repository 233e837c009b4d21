"""Keep a PostgreSQL products table in sync with MediPim's AU catalog."""
