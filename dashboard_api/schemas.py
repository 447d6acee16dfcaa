"""Wire shapes of the dashboard API: request bodies, query strings and answers (DESIGN.md, "Formats").

Request bodies forbid unknown fields (a typo such as `sytem` is a 422 naming it, not a silently
ignored setting); query strings ignore unknown parameters, as browsers and proxies add their own.
Strings refuse NUL characters (PostgreSQL cannot store them) and are bounded by their columns, so
a bad value is a 422 here rather than a database error later. Answers are built through the same
pydantic models the OpenAPI description is generated from, so the two cannot disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    RootModel,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from dashboard_api.errors import ApiError, invalid_field, not_found
from router import cursors
from router.errors import InvalidInput
from router.types import AgentView, EventRecord, MessageReceipt, Page, SessionView

T = TypeVar("T", bound=BaseModel)

MAX_BODY_BYTES = 1024 * 1024
NO_NUL = r"^[^\x00]*$"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CURSOR_PATTERN = r"^[A-Za-z0-9_=-]{1,512}$"
MAX_SEQ = 2**53 - 1  # exact in JSON numbers and well inside a BIGINT

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
ModelName = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
SlackId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ToolName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
Text = Annotated[str, Field(pattern=NO_NUL)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SlackBindingIn(Body):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "anyOf": [
                {"required": ["default"], "properties": {"default": {"const": True}}},
                {"required": ["channel_ids"], "properties": {"channel_ids": {"minItems": 1}}},
            ]
        },
    )

    team_id: SlackId
    channel_ids: list[SlackId] = Field(default_factory=list, max_length=100)
    default: bool = False

    @model_validator(mode="after")
    def _binds_something(self) -> SlackBindingIn:
        if not self.channel_ids and not self.default:
            raise ValueError("bind at least one of `channel_ids`, or set `default`")
        return self


class AgentCreate(Body):
    """`POST /dashboard/agents`."""

    name: Name
    model: ModelName
    system: Text = ""
    approval_required_tools: list[ToolName] = Field(default_factory=list, max_length=100)
    slack: SlackBindingIn | None = None


class SessionCreate(Body):
    """`POST /dashboard/agents/{agent_id}/sessions`: an optional first message and title."""

    text: Annotated[str, Field(min_length=1, pattern=NO_NUL)] | None = None
    title: Annotated[str, Field(max_length=300, pattern=NO_NUL)] | None = None


class MessageCreate(Body):
    """`POST .../messages`."""

    text: Annotated[str, Field(min_length=1, pattern=NO_NUL)]


# -- query strings ----------------------------------------------------------------------------


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ListQuery(Query):
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(
        default=None,
        pattern=CURSOR_PATTERN,
        description="Opaque: the `next_cursor` of the previous page, as given",
    )

    @field_validator("cursor")
    @classmethod
    def _cursor_is_ours(cls, value: str | None) -> str | None:
        if value is not None:
            check_list_cursor(value)
        return value


class SessionListQuery(ListQuery):
    status: Literal["idle", "running", "archived"] | None = None
    source: Literal["dashboard", "slack", "schedule", "webhook"] | None = None


class EventQuery(Query):
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    after: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    before: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    order: Literal["asc", "desc"] = "asc"
    cursor: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,16}$",
        description="The `next_cursor` of the previous page (the last seq it held)",
    )

    def bounds(self) -> tuple[int | None, int | None]:
        """`after`/`before` with the cursor (the last seq of the previous page) folded in."""
        after, before = self.after, self.before
        if self.cursor is not None:
            seq = int(self.cursor)
            if self.order == "asc":
                after = seq if after is None else max(after, seq)
            else:
                before = seq if before is None else min(before, seq)
        return after, before


class StreamQuery(Query):
    after: int | None = Field(default=None, ge=0, le=MAX_SEQ)


def check_list_cursor(value: str) -> None:
    """Refuse a cursor this API did not give out before it reaches a query."""
    try:
        created_at, row_id = cursors.decode(value)
    except InvalidInput as exc:
        raise ValueError("is not a cursor this API gave out") from exc
    if created_at.tzinfo is None or not _is_id(row_id):
        raise ValueError("is not a cursor this API gave out")
    try:
        created_at.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("is not a cursor this API gave out") from exc


# -- answers ----------------------------------------------------------------------------------


class Answer(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SlackBindingOut(Answer):
    team_id: str
    channel_ids: list[str]
    default: bool


class AgentOut(Answer):
    id: str
    workspace_id: str
    name: str
    model: str
    system: str
    approval_required_tools: list[str]
    anthropic_agent_id: str | None
    slack: SlackBindingOut | None
    created_at: datetime


class SlackThreadOut(Answer):
    team_id: str
    channel_id: str
    thread_ts: str
    conversation_key: str


class SessionOut(Answer):
    id: str
    deployed_agent_id: str
    anthropic_session_id: str | None
    status: Literal["idle", "running", "archived"]
    queued: int
    source: Literal["dashboard", "slack", "schedule", "webhook"]
    title: str
    created_by: str | None
    slack: SlackThreadOut | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


class MessageOut(Answer):
    message_id: str
    session_id: str
    status: str
    queued: int


class SessionCreatedOut(SessionOut):
    """A new session; `message` is there only when the request carried a first message."""

    message: MessageOut | None = None


class EventOut(Answer):
    seq: int
    id: str
    type: str
    created_at: datetime
    data: dict[str, Any]


class DeltaOut(Answer):
    """An SSE `event: delta` frame: a best-effort fragment of an agent message being written."""

    event_id: str
    text: str


class AgentPage(BaseModel):
    data: list[AgentOut]
    has_more: bool
    next_cursor: str | None


class SessionPage(BaseModel):
    data: list[SessionOut]
    has_more: bool
    next_cursor: str | None


class EventPage(BaseModel):
    data: list[EventOut]
    has_more: bool
    next_cursor: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


def agent_json(view: AgentView) -> dict[str, Any]:
    return AgentOut.model_validate(view).model_dump(mode="json")


def session_json(view: SessionView, message: MessageReceipt | None = None) -> dict[str, Any]:
    answer = SessionOut.model_validate(view).model_dump(mode="json")
    if message is not None:
        answer["message"] = message_json(message)
    return answer


def message_json(receipt: MessageReceipt) -> dict[str, Any]:
    return MessageOut.model_validate(receipt).model_dump(mode="json")


def event_json(record: EventRecord) -> dict[str, Any]:
    """The one event shape of the history pages and the SSE `data:` lines."""
    return record.to_json()


def page_json(page: Page, item_json: Any) -> dict[str, Any]:
    return {
        "data": [item_json(item) for item in page.items],
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }


# -- reading requests -------------------------------------------------------------------------


def _is_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)


def path_id(request: web.Request, name: str, what: str) -> str:
    """An id from the path; one that cannot exist is answered 404 without a database query."""
    value = request.match_info[name]
    if not _is_id(value):
        raise not_found(f"no {what} {value[:64]!r}")
    return value


def field_name(loc: tuple[Any, ...], root: str) -> str:
    """`slack.channel_ids[0]` from pydantic's location tuple."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or root


def _first_problem(exc: ValidationError, root: str) -> ApiError:
    error = exc.errors(include_url=False)[0]
    name = field_name(tuple(error["loc"]), root)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "is not a field of this request"
    elif error["type"] == "missing":
        message = "is required"
    return invalid_field(name, message)


async def read_body(request: web.Request, model: type[T], *, optional: bool) -> T:
    """The validated body: 413 over 1 MiB, 400 when it is not JSON, 422 naming a bad field."""
    raw = await request.read()  # raises HTTPRequestEntityTooLarge over client_max_size
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", "the request body is larger than 1 MiB")
    if not raw.strip():
        if optional:
            return model()
        raise ApiError(400, "bad_request", "a JSON object body is required")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if exc.errors(include_url=False)[0]["type"] == "json_invalid":
            raise ApiError(400, "bad_request", "the request body is not valid JSON") from exc
        raise _first_problem(exc, "body") from exc


def read_query(request: web.Request, model: type[T]) -> T:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise _first_problem(exc, "query") from exc


# -- approvals, usage, schedules, webhooks, trigger runs, escalations, wallets (issue 6) -------

MONEY_PLACES = Decimal("0.000001")
SECONDS_PLACES = Decimal("0.001")
MONEY_PATTERN = r"^-?[0-9]+\.[0-9]{6}$"


def _money(value: Decimal) -> str:
    """Six places always ("0.000213"): a turn of a few tokens costs a fraction of a cent."""
    return f"{(value or Decimal(0)).quantize(MONEY_PLACES):f}"  # no "-0.000000"


def _seconds(value: Decimal) -> float:
    return float(value.quantize(SECONDS_PLACES))


Money = Annotated[
    Decimal,
    PlainSerializer(_money, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": MONEY_PATTERN,
            "description": "US dollars, a decimal string with 6 places",
            "examples": ["0.000213"],
        }
    ),
]
Seconds = Annotated[
    Decimal,
    PlainSerializer(_seconds, return_type=float),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": 0,
            "description": "Seconds of runtime, a JSON number rounded to milliseconds",
        }
    ),
]


class ApprovalDecide(Body):
    """`POST .../approvals/{tool_use_id}`."""

    decision: Literal["allow", "deny"]
    reason: Annotated[str, Field(max_length=4000, pattern=NO_NUL)] | None = None


class ScheduleSlackIn(Body):
    team_id: SlackId
    channel_id: SlackId


class ScheduleCreate(Body):
    """`POST /dashboard/agents/{agent_id}/schedules`."""

    cron: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
    timezone: Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)] = Field(
        default="UTC", description="An IANA time zone (`Europe/Paris`); the cron runs in it"
    )
    input_text: Annotated[str, Field(min_length=1, max_length=100_000, pattern=NO_NUL)]
    enabled: bool = True
    slack: ScheduleSlackIn | None = Field(
        default=None, description="Post each run's answer as a new message in this channel"
    )


class EscalationListQuery(ListQuery):
    status: Literal["open", "resolved"] | None = None


class WebhookPayload(RootModel[Any]):
    """A delivery's body: any JSON value; it becomes the session's first message as sent."""


class ApprovalOut(Answer):
    tool_use_id: str
    decision: Literal["allow", "deny"]
    reason: str | None
    decided_by: str
    decided_at: datetime


class TurnUsageOut(Answer):
    turn: int
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    runtime_seconds: Seconds
    cost_usd: Money


class UsageTotalOut(TurnUsageOut):
    turn: None = Field(default=None, description="Always null: the total covers every turn")


class UsageOut(Answer):
    turns: list[TurnUsageOut]
    total: UsageTotalOut


class ScheduleSlackOut(Answer):
    team_id: str
    channel_id: str


class ScheduleOut(Answer):
    id: str
    agent_id: str
    cron: str
    timezone: str
    input_text: str
    enabled: bool
    slack: ScheduleSlackOut | None
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    created_at: datetime


class SchedulePage(BaseModel):
    data: list[ScheduleOut]
    has_more: bool
    next_cursor: str | None


class WebhookOut(Answer):
    id: str
    url: str = Field(description="Where to POST deliveries (`PUBLIC_URL` or this server's address)")
    secret: str = Field(description="Signs deliveries: `X-Signature: sha256=<hex HMAC-SHA256>`")


class DeliveryOut(Answer):
    session_id: str
    trigger_run_id: str


class TriggerRunOut(Answer):
    id: str
    kind: Literal["schedule", "webhook"]
    schedule_id: str | None
    webhook_endpoint_id: str | None
    session_id: str | None
    session_status: Literal["idle", "running", "archived"] | None
    status: Literal["started", "ok", "error"]
    error: str | None
    fire_time: datetime | None
    created_at: datetime
    finished_at: datetime | None


class TriggerRunPage(BaseModel):
    data: list[TriggerRunOut]
    has_more: bool
    next_cursor: str | None


class EscalationOut(Answer):
    id: str
    session_id: str
    reason: str
    status: Literal["open", "resolved"]
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


class EscalationPage(BaseModel):
    data: list[EscalationOut]
    has_more: bool
    next_cursor: str | None


class WalletOut(Answer):
    kind: Literal["ai", "data"]
    balance_usd: Money


class LedgerEntryOut(Answer):
    id: str
    kind: Literal["ai", "data"]
    amount_usd: Money = Field(description="Negative for a debit")
    balance_after_usd: Money
    reason: str = Field(description="starting_credit, topup, turn or tool_call")
    ref: str | None
    created_at: datetime


class WalletsOut(Answer):
    wallets: list[WalletOut]
    ledger: list[LedgerEntryOut] = Field(description="The latest entries, newest first")


def answer_json(model: type[Answer], value: Any) -> dict[str, Any]:
    """`value` (a core view) in the wire shape of `model`."""
    return model.model_validate(value).model_dump(mode="json")
