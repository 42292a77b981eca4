// What a frontend writes against the client generated from /openapi.json by
// openapi-typescript with its default options; `tsc --strict` must accept it.
import type { components, paths } from "./schema";

type Task = components["schemas"]["TaskPublic"];
type NewTask = paths["/api/{user_id}/tasks"]["post"]["requestBody"]["content"]["application/json"];
type Patch = paths["/api/{user_id}/tasks/{task_id}"]["patch"]["requestBody"]["content"]["application/json"];
type Listing = paths["/api/{user_id}/tasks"]["get"];
type Tag = components["schemas"]["TagPublic"];
type Stats = components["schemas"]["TaskStats"];
type Problem = components["schemas"]["Problem"];

// A title alone is a whole new task: every other field is optional.
export const plain: NewTask = { title: "Buy milk" };
export const organised: NewTask = {
  title: "Team meeting",
  priority: "high",
  due_at: "2026-11-30T09:00:00+01:00",
  remind_at: null,
  tags: ["work"],
  recurrence: "FREQ=WEEKLY;BYDAY=MO",
  time_zone: "Europe/Berlin",
};
export const tick: Patch = { completed: true };
export const untag: Patch = { tags: [] };

// Every field of a task, read with its proper type.
export function describe(task: Task): string {
  const id: number = task.id;
  const title: string = task.title;
  const description: string | null = task.description;
  const completed: boolean = task.completed;
  const priority: "none" | "low" | "medium" | "high" = task.priority;
  const due: string | null = task.due_at;
  const remind: string | null = task.remind_at;
  const reminded: string | null = task.reminded_at;
  const tags: string[] = task.tags;
  const rule: string | null = task.recurrence;
  const zone: string = task.time_zone;
  const done: string | null = task.completed_at;
  const next: number | null = task.next_occurrence_id;
  const created: string = task.created_at;
  const version: number = task.version;
  return [id, title, description, completed, priority, due, remind, reminded, tags.join(","), rule, zone, done, next, created, version].join(" ");
}

// Incremental sync, and the headers of an offline-tolerant write.
type Changes = components["schemas"]["TaskChanges"];
type Guarded = NonNullable<paths["/api/{user_id}/tasks/{task_id}"]["patch"]["parameters"]["header"]>;
export const guarded: Guarded = { "If-Match": '"3"', "Idempotency-Key": "7d9e-edit" };
export function apply(copy: Map<number, Task>, changes: Changes): string {
  for (const task of changes.tasks) copy.set(task.id, task);
  for (const gone of changes.deleted) copy.delete(gone.id);
  return changes.has_more ? changes.next_since : "";
}

export const query: NonNullable<Listing["parameters"]["query"]> = {
  status: "pending",
  priority: ["high", "medium"],
  tag: ["work"],
  q: "report",
  sort: "due",
  order: "asc",
  overdue: true,
  limit: 20,
};

export function counts(tag: Tag, stats: Stats): number {
  return tag.task_count + tag.pending_count + stats.overdue + stats.due_today + stats.by_priority.high;
}

export function explain(problem: Problem): string {
  return `${problem.status} ${problem.title}: ${problem.detail}`;
}

// The chat: a message (continuing a conversation, in the person's zone), its answer with
// the tools it called, and the saved conversations.
type ChatBody = paths["/api/{user_id}/chat"]["post"]["requestBody"]["content"]["application/json"];
type ChatAnswer = components["schemas"]["ChatAnswer"];
type Conversation = components["schemas"]["ConversationDetail"];
export const ask: ChatBody = { message: "add milk to my list for tomorrow" };
export const followUp: ChatBody = { conversation_id: 7, message: "and eggs", time_zone: "Europe/Berlin" };
export function show(answer: ChatAnswer, conversation: Conversation): string {
  const calls = answer.tool_calls.map((call) => `${call.tool}(${JSON.stringify(call.arguments)})`);
  const lines = conversation.messages.map((message) => {
    const role: "user" | "assistant" = message.role;
    const failed: number | undefined = message.error?.status;
    return `${role}: ${message.content}${failed ? ` (${failed})` : ""}`;
  });
  return [answer.conversation_id, answer.response, ...calls, ...lines].join("\n");
}
