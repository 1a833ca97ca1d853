"""SQL expressions over a run's JSON columns, shared by the model (its generated columns) and the runs
table (its sorts and filters). No model import here: migrations import this module."""

from __future__ import annotations

import json

from django.db.models import F, FloatField, Func


class JsonNumber(Func):
    """A number stored under ``key`` in a JSON column, as a float; NULL when the value there is not a
    number (missing, text, true/false). PostgreSQL would refuse to cast text, and a boolean is not a
    hyperparameter's value to sort by."""

    output_field = FloatField()

    def __init__(self, column: str, key: str) -> None:
        super().__init__(F(column))
        self.key = key

    def as_sql(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            sql = (
                f"(CASE WHEN jsonb_typeof({column} -> %s) = 'number' "
                f"THEN ({column} ->> %s)::double precision END)"
            )
            return sql, (*params, self.key, *params, self.key)
        path = "$." + json.dumps(self.key)
        sql = (
            f"(CASE WHEN json_type({column}, %s) IN ('integer', 'real') "
            f"THEN CAST(json_extract({column}, %s) AS REAL) END)"
        )
        return sql, (*params, path, *params, path)
