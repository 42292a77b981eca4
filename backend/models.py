"""Tables, and the request and response schemas of the task API."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, Integer, MetaData, String
from sqlmodel import Field, SQLModel

TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 1000
USER_ID_MAX_LENGTH = 255
EMAIL_MAX_LENGTH = 320
NAME_MAX_LENGTH = 255

# Stable constraint names, so migrations can drop and alter them on every database.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata


def utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp_column() -> Any:
    return Column(DateTime(timezone=True), nullable=False)


class User(SQLModel, table=True):
    """A Better Auth user, recorded the first time they write."""

    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=USER_ID_MAX_LENGTH)
    email: str | None = Field(default=None, max_length=EMAIL_MAX_LENGTH)
    name: str | None = Field(default=None, max_length=NAME_MAX_LENGTH)
    created_at: datetime = Field(default_factory=utc_now, sa_column=_timestamp_column())
    # Kept by database triggers on `tasks` (see the migrations), so a list's
    # X-Total-Count is one row away however many tasks a user has.
    task_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    completed_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    # One index per sort key the list offers, each led by the owner and ending
    # in the id tie-breaker, so every list is an index range scan.
    __table_args__ = (
        Index(None, "user_id", "created_at", "id"),
        Index(None, "user_id", "updated_at", "id"),
        Index(None, "user_id", "title", "id"),
    )

    # BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    user_id: str = Field(
        sa_column=Column(
            String(USER_ID_MAX_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    title: str = Field(max_length=TITLE_MAX_LENGTH)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX_LENGTH)
    completed: bool = False
    created_at: datetime = Field(default_factory=utc_now, sa_column=_timestamp_column())
    updated_at: datetime = Field(default_factory=utc_now, sa_column=_timestamp_column())


# --- request bodies -------------------------------------------------------------------

# PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
NO_NUL = r"^[^\x00]*$"
# A title has something besides whitespace (and no NUL): the schema says so to clients too.
TITLE_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
Title = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=TITLE_MAX_LENGTH, pattern=TITLE_PATTERN
    ),
]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX_LENGTH, pattern=NO_NUL)]


class RequestBody(BaseModel):
    # Unknown fields are an error, so a client can never set id, user_id or
    # timestamps; strict types, so "yes" is not a boolean and 1 not a title.
    model_config = ConfigDict(extra="forbid", strict=True)


class TaskCreate(RequestBody):
    title: Title
    description: Description | None = None
    completed: bool = False

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"title": "Buy milk", "description": "2 litres, oat"}]},
    )


class TaskReplace(RequestBody):
    """The editable content, whole: an omitted description becomes null."""

    title: Title
    description: Description | None = None
    completed: bool | SkipJsonSchema[None] = None

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"title": "Buy oat milk", "description": None, "completed": False}]},
    )


class TaskUpdate(RequestBody):
    """Any non-empty subset of the editable fields."""

    title: Title | SkipJsonSchema[None] = None
    description: Description | None = None
    completed: bool | SkipJsonSchema[None] = None

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"completed": True}, {"description": None}], "minProperties": 1},
    )

    @field_validator("title", "completed", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Only `description` may be cleared; a missing title is a different thing from a null one.
        if value is None:
            raise ValueError("may be omitted but not null")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("at least one of title, description, completed is required")
        return self


class TaskCompletion(RequestBody):
    completed: bool

    model_config = ConfigDict(json_schema_extra={"examples": [{"completed": True}]})


# --- responses --------------------------------------------------------------------------


class TaskPublic(BaseModel):
    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    created_at: AwareDatetime
    updated_at: AwareDatetime

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "user_id": "u_8KJx2mQ",
                    "title": "Buy milk",
                    "description": "2 litres, oat",
                    "completed": False,
                    "created_at": "2026-11-22T09:30:00.123456Z",
                    "updated_at": "2026-11-22T09:30:00.123456Z",
                }
            ]
        },
    )


# Query parameters of the list.
TaskStatus = Literal["all", "pending", "completed"]
TaskSort = Literal["created", "updated", "title"]
SortOrder = Literal["asc", "desc"]
