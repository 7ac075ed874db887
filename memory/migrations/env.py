"""Alembic environment: runs migrations on the connection handed over by
`memory.migrate` (config.attributes["connection"]); never opens its own."""

from alembic import context

from memory.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `axi db upgrade`, not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
