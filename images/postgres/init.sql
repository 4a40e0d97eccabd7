-- Databases of the docker-compose stack. The postgres image runs this once, when its data
-- volume is first initialised (/docker-entrypoint-initdb.d). POSTGRES_USER owns both.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
