"""The --subscription/--resource-group/--factory options of commands that take no plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def factory_options(func: F) -> F:
    func = click.option("--factory", help="Factory name [env BACKFILL_FACTORY].")(func)
    func = click.option("--resource-group", help="Resource group [env BACKFILL_RESOURCE_GROUP].")(func)
    func = click.option("--subscription", help="Subscription ID [env AZURE_SUBSCRIPTION_ID].")(func)
    return func
