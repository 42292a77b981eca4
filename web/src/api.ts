// The task API, as a browser on another origin calls it: a Better Auth token in memory,
// one fresh token and one retry on a 401, problem+json turned into messages, the headers
// CORS lets the page read (ETag, X-Total-Count, Link).
import { fetchEventSource, type EventSourceMessage } from "@microsoft/fetch-event-source";
import { createAuthClient } from "better-auth/client";
import { jwtClient } from "better-auth/client/plugins";

// Better Auth is served by the same origin as this page.
export const authClient = createAuthClient({ plugins: [jwtClient()] });

export type Priority = "none" | "low" | "medium" | "high";

export interface Task {
  id: number;
  list_id: number;
  parent_id: number | null;
  position: string;
  subtask_count: number;
  open_subtask_count: number;
  title: string;
  description: string | null;
  completed: boolean;
  priority: Priority;
  due_at: string | null;
  remind_at?: string | null;
  reminded_at?: string | null;
  tags: string[];
  version: number;
  created_at: string;
  updated_at: string;
}

/** A CloudEvent of the stream (`data:` of each message; `data.data` is the task). */
export interface TaskEvent {
  id: string;
  type: string;
  subject: string;
  sequence: string;
  late?: boolean;
  data: Partial<Task> & { id: number; deleted_at?: string };
}

/** A list of the person's (the Inbox among them), with the counts of its tasks. */
export interface TaskList {
  id: number;
  name: string;
  inbox: boolean;
  version: number;
  task_count: number;
  pending_count: number;
}

/** What the assistant did while answering: a tool, what it was given, what it returned. */
export interface ToolCall {
  tool: string;
  arguments: Record<string, unknown>;
  result: Record<string, unknown>;
}

export interface ChatAnswer {
  conversation_id: number;
  response: string;
  tool_calls: ToolCall[];
}

/** What a streamed answer tells as it comes. */
export interface ChatHandlers {
  onConversation?: (conversationId: number) => void;
  onDelta?: (text: string) => void;
  onToolCall?: (call: ToolCall) => void;
}

export interface TaskPage {
  tasks: Task[];
  total: number;
  next: URL | null;
  previous: URL | null;
}

/** An answer other than 2xx, with the API's own words for it. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** No answer at all: the API is down, or the browser refused the answer (CORS). */
export class NetworkError extends Error {}

interface Problem {
  detail?: string;
  title?: string;
  errors?: { loc?: (string | number)[]; msg?: string }[];
}

async function problemMessage(response: Response): Promise<string> {
  let problem: Problem = {};
  try {
    problem = (await response.json()) as Problem;
  } catch {
    // Not JSON: a proxy's page, say. The status is all there is to say.
  }
  const detail = problem.detail ?? problem.title ?? `the API answered ${response.status}`;
  const reasons = (problem.errors ?? []).map((error) => {
    const field = (error.loc ?? []).filter((part) => part !== "body").join(".");
    return field ? `${field}: ${error.msg ?? "invalid"}` : (error.msg ?? "invalid");
  });
  return reasons.length ? `${detail} (${reasons.join("; ")})` : detail;
}

/** `Link: <...>; rel="next"` targets, resolved against the API's URL (they are relative). */
function links(response: Response, base: string): Map<string, URL> {
  const found = new Map<string, URL>();
  for (const part of (response.headers.get("Link") ?? "").split(/,(?=\s*<)/)) {
    const match = /<([^>]*)>\s*;\s*rel="?([^";]+)"?/.exec(part);
    if (match) found.set(match[2], new URL(match[1], base));
  }
  return found;
}

export class TaskApi {
  private token: string | null = null;

  constructor(
    readonly baseUrl: string,
    private readonly userId: string,
  ) {}

  private async freshToken(): Promise<string> {
    const { data, error } = await authClient.token();
    if (error || !data) throw new ApiError(401, "your session has ended; sign in again");
    this.token = data.token;
    return data.token;
  }

  /** The request, with the token; a 401 (an expired token) gets one fresh token and one retry. */
  private async send(path: string, init: RequestInit = {}): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const token = this.token ?? (await this.freshToken());
      let response: Response;
      try {
        response = await fetch(`${this.baseUrl}${path}`, {
          ...init,
          headers: { ...init.headers, Authorization: `Bearer ${token}` },
        });
      } catch {
        throw new NetworkError(
          `Could not reach the task API at ${this.baseUrl}: the request failed without an answer. ` +
            `The API may be down, or it does not allow this page's origin (${location.origin}) in its CORS_ORIGINS.`,
        );
      }
      if (response.status === 401 && attempt === 0) {
        this.token = null;
        continue;
      }
      if (!response.ok) throw new ApiError(response.status, await problemMessage(response));
      return response;
    }
  }

  private tasksPath(rest = ""): string {
    return `/api/${encodeURIComponent(this.userId)}/tasks${rest}`;
  }

  /** A page of tasks; `query` holds the list's own parameters (status, sort, q, offset...). */
  async list(query: URLSearchParams): Promise<TaskPage> {
    const response = await this.send(this.tasksPath(`?${query}`));
    const found = links(response, this.baseUrl);
    return {
      tasks: (await response.json()) as Task[],
      total: Number(response.headers.get("X-Total-Count") ?? 0),
      next: found.get("next") ?? null,
      previous: found.get("prev") ?? null,
    };
  }

  async get(id: number): Promise<Task> {
    return (await (await this.send(this.tasksPath(`/${id}`))).json()) as Task;
  }

  /** Where a task goes: under `parent_id` (null: the top level) of its list, after `after_id`
   * (null: first). Its subtasks go with it. */
  async move(id: number, version: number, place: { parent_id: number | null; after_id: number | null }): Promise<Task> {
    const response = await this.send(this.tasksPath(`/${id}/move`), {
      method: "POST",
      headers: { "Content-Type": "application/json", "If-Match": `"${version}"` },
      body: JSON.stringify(place),
    });
    return (await response.json()) as Task;
  }

  async create(task: Partial<Task> & { title: string; time_zone?: string; list_id?: number }): Promise<Task> {
    const response = await this.send(this.tasksPath(), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(task),
    });
    return (await response.json()) as Task;
  }

  /** Changes sent with `If-Match`: a task changed since `version` was read is a 412, not overwritten. */
  async update(id: number, version: number, changes: Partial<Task>): Promise<Task> {
    const response = await this.send(this.tasksPath(`/${id}`), {
      method: "PATCH",
      headers: { "Content-Type": "application/json", "If-Match": `"${version}"` },
      body: JSON.stringify(changes),
    });
    return (await response.json()) as Task;
  }

  async toggle(id: number, version: number): Promise<Task> {
    const response = await this.send(this.tasksPath(`/${id}/complete`), {
      method: "PATCH",
      headers: { "If-Match": `"${version}"` },
    });
    return (await response.json()) as Task;
  }

  /**
   * The person's events as they happen, until `signal` aborts: `onEvent` gets each message
   * (`event` is its type: task.created, task.updated, ..., reminder.due, or reset). A browser's
   * EventSource cannot send an Authorization header, so this is fetch-based; it comes back
   * after every end (a token expires; the server restarts) with a fresh token and the last
   * event's id in Last-Event-ID, so nothing is missed.
   */
  async streamEvents(onEvent: (message: EventSourceMessage) => void, signal: AbortSignal): Promise<void> {
    let lastId: string | null = null;
    while (!signal.aborted) {
      try {
        const token = this.token ?? (await this.freshToken());
        const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
        if (lastId) headers["Last-Event-ID"] = lastId;
        await fetchEventSource(`${this.baseUrl}/api/${encodeURIComponent(this.userId)}/events`, {
          headers,
          signal,
          openWhenHidden: true, // a reminder is due in a background tab too
          onopen: async (response) => {
            if (response.status === 401) this.token = null;
            if (!response.ok) throw new ApiError(response.status, await problemMessage(response));
          },
          onmessage: (message) => {
            if (message.id) lastId = message.id;
            if (message.event) onEvent(message);
          },
          onclose: () => {
            throw new Error("the stream ended"); // reconnect below, with a fresh token if need be
          },
          onerror: (error: unknown) => {
            throw error; // our loop retries, not the library's (it would reuse the old token)
          },
        });
      } catch {
        if (signal.aborted) return;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  /**
   * A message to the assistant, its answer streamed (server-sent events over a POST, so
   * fetch-based as the event stream is). Sent with an Idempotency-Key: if the connection
   * drops, sending it again with the same key gets the stored answer, never a second run.
   */
  async chat(
    message: string,
    conversationId: number | null,
    timeZone: string,
    handlers: ChatHandlers,
    idempotencyKey: string = crypto.randomUUID(),
  ): Promise<ChatAnswer> {
    const body = JSON.stringify({
      message,
      time_zone: timeZone,
      ...(conversationId === null ? {} : { conversation_id: conversationId }),
    });
    for (let attempt = 0; ; attempt++) {
      const token = this.token ?? (await this.freshToken());
      let answer: ChatAnswer | null = null;
      let refused: ApiError | null = null;
      try {
        await fetchEventSource(`${this.baseUrl}/api/${encodeURIComponent(this.userId)}/chat`, {
          method: "POST",
          headers: {
            Authorization: `Bearer ${token}`,
            "Content-Type": "application/json",
            "Idempotency-Key": idempotencyKey,
          },
          body,
          openWhenHidden: true,
          onopen: async (response) => {
            if (!response.ok) throw new ApiError(response.status, await problemMessage(response));
          },
          onmessage: (event) => {
            const data = JSON.parse(event.data) as Record<string, unknown>;
            if (event.event === "conversation") handlers.onConversation?.(data.conversation_id as number);
            else if (event.event === "delta") handlers.onDelta?.(data.text as string);
            else if (event.event === "tool_call") handlers.onToolCall?.(data as unknown as ToolCall);
            else if (event.event === "done") answer = data as unknown as ChatAnswer;
            else if (event.event === "error") refused = new ApiError(data.status as number, data.detail as string);
          },
          onclose: () => {},
          onerror: (error: unknown) => {
            throw error; // no retry by the library: a retry is ours to decide
          },
        });
      } catch (error) {
        if (error instanceof ApiError && error.status === 401 && attempt === 0) {
          this.token = null;
          continue;
        }
        if (error instanceof ApiError) throw error;
        throw new NetworkError(`Could not reach the assistant at ${this.baseUrl}: ${String(error)}`);
      }
      if (refused) throw refused;
      if (!answer) throw new NetworkError("The assistant's answer was cut off; send the message again.");
      return answer;
    }
  }

  async lists(): Promise<TaskList[]> {
    return (await (await this.send(`/api/${encodeURIComponent(this.userId)}/lists`)).json()) as TaskList[];
  }

  async createList(name: string): Promise<TaskList> {
    const response = await this.send(`/api/${encodeURIComponent(this.userId)}/lists`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    return (await response.json()) as TaskList;
  }

  /** The list and its tasks (If-Match: a list renamed elsewhere meanwhile is a 412). */
  async deleteList(list: TaskList): Promise<void> {
    await this.send(`/api/${encodeURIComponent(this.userId)}/lists/${list.id}`, {
      method: "DELETE",
      headers: { "If-Match": `"${list.version}"` },
    });
  }

  async remove(id: number, version: number): Promise<void> {
    await this.send(this.tasksPath(`/${id}`), { method: "DELETE", headers: { "If-Match": `"${version}"` } });
  }
}
