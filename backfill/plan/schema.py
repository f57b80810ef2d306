"""The plan file's schema (spec §3) as pydantic v2 models.

Shape and types are checked by pydantic; rules that span keys (windows that divide the range,
match names that exist, unique check names...) raise a ``plan_rule`` error whose context names
the offending key, so ``backfill.plan.loader`` can report file, dotted key and expectation in one line.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from backfill.plan.fields import (
    EXAMPLE_TIME,
    MAX_WINDOWS_ENV,
    Duration,
    Name,
    ParameterValue,
    Poll,
    UtcDatetime,
    WindowPair,
    as_utc,
    duration_field,
    max_windows_limit,
    rule,
    show,
)
from backfill.plan.relative import relative_bound_schema
from backfill.secrets import Secret
from backfill.windows import (
    TemplateError,
    WindowError,
    check_template,
    count_windows,
    duration_text,
    explicit_windows,
)

# --- sections -----------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Section):
    subscription_id: Name = Field(description="Azure subscription ID of the data factory.")
    resource_group: Name
    factory: Name
    pipeline: Name


class WindowsSpec(_Section):
    # A relative bound ("yesterday 00:00Z") is resolved before the model sees it (plan.relative);
    # the schema says so, so that editors accept the example plans.
    start: UtcDatetime | None = Field(
        None, description="First window's start (with start/end/every).", json_schema_extra=relative_bound_schema
    )
    end: UtcDatetime | None = Field(
        None, description="Last window's end, exclusive.", json_schema_extra=relative_bound_schema
    )
    every: Duration | None = Field(
        None, description="Window length, a duration like 15m; must divide end - start exactly."
    )
    list_: list[WindowPair] | None = Field(
        None,
        alias="list",
        description="Explicit windows [[start, end], ...] instead of start/end/every; none may overlap.",
    )

    @model_validator(mode="after")
    def _one_form(self, info: ValidationInfo) -> WindowsSpec:
        limit = max_windows_limit((info.context or {}).get("max_windows"))
        if self.list_ is not None:
            if any(getattr(self, key) is not None for key in ("start", "end", "every")):
                raise rule("list", "expected either list or start/end/every, not both")
            if not self.list_:
                raise rule("list", "expected at least one [start, end] pair")
            if len(self.list_) > limit:
                raise rule("list", f"{len(self.list_)} windows, more than the limit of {limit} ({MAX_WINDOWS_ENV})")
            try:
                explicit_windows(self.list_)
            except WindowError as exc:
                raise rule(f"list[{exc.index}]", str(exc)) from None
            return self
        for key in ("start", "end", "every"):
            if getattr(self, key) is None:
                raise rule(key, "is required (or give list = [[start, end], ...] instead)")
        assert self.start is not None and self.end is not None and self.every is not None
        if self.every % timedelta(seconds=1):
            raise rule("every", f'"{duration_text(self.every)}" is not whole seconds')
        try:
            count = count_windows(self.start, self.end, self.every)
        except WindowError as exc:
            raise rule(exc.field, str(exc)) from None
        if count > limit:
            raise rule(
                "every",
                f'"{duration_text(self.every)}" gives {count} windows, more than the limit of {limit} '
                f"({MAX_WINDOWS_ENV})",
            )
        return self


class MatchSpec(_Section):
    on: list[Name] | None = Field(
        None, description="Parameters that identify a window in run history (default: all non-secret ones)."
    )


class CheckModel(BaseModel):
    """One ``[[checks]]`` table: every key besides name, kind and timeout is a kind option."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Name = Field(description="Unique name of the check.")
    kind: Name = Field(description="odbc, sql, command, or a plugin registered in backfill.checks.")
    timeout: Duration = duration_field(timedelta(seconds=30), "A check taking longer is an error.")

    @model_validator(mode="before")
    @classmethod
    def _normalise_options(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {key: value if key in cls.model_fields else _option(key, value) for key, value in data.items()}

    @model_validator(mode="after")
    def _options(self) -> CheckModel:
        args = (self.model_extra or {}).get("args")
        _args_templates("args", args)
        expect = (self.model_extra or {}).get("expect")
        if isinstance(expect, dict):
            _args_templates("expect.args", expect.get("args"))
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _option(key: str, value: Any) -> Any:
    # Options must survive the canonical JSON dump unchanged in meaning: instants in UTC (so
    # +02:00 and Z spellings hash alike), nothing naive, no NaN.
    if isinstance(value, datetime):
        try:
            return as_utc(value)
        except PydanticCustomError as exc:
            raise rule(key, exc.message()) from None
    if isinstance(value, date | time):
        raise rule(key, f"{show(value)} is not a UTC date-time; expected e.g. {EXAMPLE_TIME} or a string")
    if isinstance(value, float) and not math.isfinite(value):
        raise rule(key, f"{show(value)} is not a finite number")
    if isinstance(value, dict):
        return {inner: _option(f"{key}.{inner}", item) for inner, item in value.items()}
    if isinstance(value, list):
        return [_option(f"{key}[{index}]", item) for index, item in enumerate(value)]
    return value


def _args_templates(key: str, value: Any) -> None:
    if isinstance(value, str):
        try:
            check_template(value)
        except TemplateError as exc:
            raise rule(key, f"template {show(value)}: {exc}") from None
    elif isinstance(value, dict):
        for inner, item in value.items():
            _args_templates(f"{key}.{inner}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _args_templates(f"{key}[{index}]", item)


class Approval(_Section):
    required: StrictInt = Field(1, ge=1, description="Approvals needed from people other than the requester.")
    approvers: list[Name] = Field(default_factory=list, description="Allow-list of identities (empty: anyone).")
    expires: Duration = duration_field(timedelta(hours=12), "A request or approval older than this expires.")
    canary: StrictInt = Field(0, ge=0, description="Pause for approval after the first N windows succeed.")
    # any: declared and OS identities count; verified: azure-ad, database, oidc or proxy; or one source.
    identity: Literal["any", "verified", "azure-ad", "database", "oidc", "proxy", "os", "declared"] = "any"
    aliases: dict[Name, list[Name]] = Field(
        default_factory=dict,
        description='Names of one person under other identity sources: alice = ["alice@contoso.com"].',
    )

    @model_validator(mode="after")
    def _enough_approvers(self) -> Approval:
        # Identities are one printable line (issue 9 #9): they are compared, printed and recorded.
        named = [(f"approvers[{i}]", n) for i, n in enumerate(self.approvers)]
        for person, others in self.aliases.items():
            named += [(f"aliases.{person}", person)] + [(f"aliases.{person}[{i}]", o) for i, o in enumerate(others)]
        for key, name in named:
            if name != name.strip() or not name.isprintable():
                raise rule(key, "expected one printable line without surrounding spaces")
        if self.approvers and len(set(self.approvers)) < self.required:
            raise rule(
                "required",
                f"{self.required} approvals needed but approval.approvers lists only {len(set(self.approvers))}",
            )
        return self


class Execution(_Section):
    mode: Literal["new-run", "recover"] = "new-run"
    concurrency: StrictInt = Field(1, ge=1, description="Windows in flight at once.")
    order: Literal["oldest-first", "newest-first"] = "oldest-first"
    on_failure: Literal["stop", "continue"] = "stop"
    run_timeout: Duration | None = Field(
        None, description="A run taking longer (a duration like 45m) is reported or cancelled."
    )
    on_timeout: Literal["report", "cancel"] = "report"
    poll: Poll = Field("auto", description='"auto" adapts to past durations; or a fixed interval.')
    settle: Duration | None = Field(
        None,
        description="After a createRun in doubt, how long history is searched with nothing found before the "
        "window may be created again (default 10m; spec §14).",
    )

    @model_validator(mode="after")
    def _timeout(self) -> Execution:
        if self.on_timeout == "cancel" and self.run_timeout is None:
            raise rule("on_timeout", '"cancel" needs execution.run_timeout')
        return self


class Notify(_Section):
    targets: list[StrictStr] = Field(
        default_factory=list,
        description='Webhooks told of this backfill\'s events: "KIND=${VAR}", KIND teams, slack or json; '
        "the URL is a secret, so always a ${VAR} (issue 15).",
    )

    @model_validator(mode="after")
    def _targets(self) -> Notify:
        from backfill.errors import ConfigError
        from backfill.notify.targets import parse_targets
        from backfill.secrets import variables_in

        for index, text in enumerate(self.targets):
            try:
                parse_targets(text, where=f"notify.targets[{index}]")
            except ConfigError as exc:
                raise rule(f"targets[{index}]", str(exc).split(": ", 1)[-1]) from None
            if not variables_in(text.partition("=")[2]):
                raise rule(f"targets[{index}]", "a webhook URL is a secret: write it as ${VAR}, never in the plan")
        return self


class Plan(_Section):
    """A backfill plan (spec §3)."""

    title: Name
    ticket: StrictStr = Field("", description="Free text shown in reports (an incident or change ID).")
    target: Target
    windows: WindowsSpec
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    match: MatchSpec = Field(default_factory=MatchSpec)
    checks: list[CheckModel] = Field(default_factory=list)
    approval: Approval = Field(default_factory=Approval)
    execution: Execution = Field(default_factory=Execution)
    notify: Notify = Field(default_factory=Notify)

    @model_validator(mode="after")
    def _cross_checks(self) -> Plan:
        secret = {name for name, value in self.parameters.items() if isinstance(value, Secret)}
        for index, name in enumerate(self.match.on or []):
            if name not in self.parameters:
                known = ", ".join(sorted(set(self.parameters) - secret)) or "none"
                raise rule(f"match.on[{index}]", f"{show(name)} is not in [parameters] (known: {known})")
            if name in secret:
                raise rule(f"match.on[{index}]", f"{show(name)} is a secret; secrets cannot be matched on")
            if name in (self.match.on or [])[:index]:
                raise rule(f"match.on[{index}]", f"{show(name)} is listed twice")
        seen: dict[str, int] = {}
        for index, check in enumerate(self.checks):
            if check.name in seen:
                raise rule(
                    f"checks[{index}].name", f"{show(check.name)} is already the name of checks[{seen[check.name]}]"
                )
            seen[check.name] = index
        return self

    @property
    def match_on(self) -> tuple[str, ...]:
        """The parameters that identify a window in history: ``match.on`` or all non-secret ones."""
        if self.match.on is not None:
            return tuple(self.match.on)
        return tuple(name for name, value in self.parameters.items() if not isinstance(value, Secret))
