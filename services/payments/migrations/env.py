from services.runtime.database import run_alembic_env

run_alembic_env()
