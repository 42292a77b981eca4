"""What a task's write can be refused for, beyond validation: each a problem with its status,
shared by the stores of tasks and of their tree (`tasks`, `task_tree`)."""

from http import HTTPStatus

from backend.errors import Conflict, NotFound, ProblemError, Unprocessable
from backend.models import MAX_SUBTASK_DEPTH


class TaskNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no task with this id belongs to this user")


class TaskLimitReached(Conflict):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this user already has {limit} tasks, the most one user may keep (MAX_TASKS_PER_USER); "
            "delete some to add more"
        )


class TaskListNotFound(Unprocessable):
    """A task's `list_id` names no list of the owner's: a missing list and another person's
    are the same answer."""

    def __init__(self) -> None:
        message = "no list with this id belongs to this user"
        super().__init__(
            "the request is invalid: body.list_id",
            errors=[{"loc": ["body", "list_id"], "msg": message, "type": "list_not_found"}],
        )


class RecurrenceNeedsDueDate(Unprocessable):
    def __init__(self) -> None:
        message = "a task with a recurrence needs a due_at"
        super().__init__(
            f"the request is invalid: {message}",
            errors=[{"loc": ["body", "due_at"], "msg": message, "type": "value_error"}],
        )


class RecurrenceNeverOccurs(Unprocessable):
    def __init__(self) -> None:
        message = (
            "the rule has no occurrence after due_at (within the years searched): "
            "it would never come round again"
        )
        super().__init__(
            f"the request is invalid: {message}",
            errors=[{"loc": ["body", "recurrence"], "msg": message, "type": "value_error"}],
        )


class PreconditionFailed(ProblemError):
    """The task is not at a version the write was conditioned on (If-Match, expected_version)."""

    status = HTTPStatus.PRECONDITION_FAILED

    def __init__(self, current_version: int) -> None:
        super().__init__(
            f"the task has changed since the version in If-Match (it is at version {current_version} now); "
            "read it again (its ETag), then retry"
        )
        self.current_version = current_version


class _InvalidField(Unprocessable):
    """One field of the body refused against what is stored, named as validation names it."""

    def __init__(self, field: str, message: str, error_type: str = "value_error") -> None:
        super().__init__(
            f"the request is invalid: body.{field}",
            errors=[{"loc": ["body", field], "msg": message, "type": error_type}],
        )


class ParentNotFound(_InvalidField):
    """`parent_id` names no task of the owner's: a missing task and another person's are the
    same answer."""

    def __init__(self) -> None:
        super().__init__("parent_id", "no task with this id belongs to this user", "task_not_found")


class ParentInAnotherList(_InvalidField):
    def __init__(self) -> None:
        super().__init__(
            "parent_id", "a subtask is in its parent's list: this task is in another list than list_id"
        )


class SubtaskTooDeep(_InvalidField):
    def __init__(self) -> None:
        super().__init__(
            "parent_id",
            f"subtasks go at most {MAX_SUBTASK_DEPTH} levels below a top-level task; there it "
            "(or a subtask of it) would be deeper",
        )


class SubtaskCycle(_InvalidField):
    def __init__(self) -> None:
        super().__init__("parent_id", "a task cannot go under itself or under one of its own subtasks")


class SubtaskRecurs(_InvalidField):
    def __init__(self, field: str) -> None:
        super().__init__(
            field,
            "a subtask has no recurrence of its own (its parent's next occurrence gets copies of "
            "its subtasks)",
        )


class NotASibling(_InvalidField):
    def __init__(self) -> None:
        super().__init__(
            "after_id",
            "no other task of this user's is at that place (the same list and parent) to follow",
            "task_not_found",
        )
