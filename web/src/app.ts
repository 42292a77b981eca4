// The page: Better Auth's client for signing in, the task API for everything else. No UI
// framework: the DOM, built with a small helper (never innerHTML: titles are user input).
import { ApiError, authClient, NetworkError, type Priority, type Task, TaskApi, type TaskEvent } from "./api";

const apiUrl = document.querySelector<HTMLMetaElement>('meta[name="todo-api-url"]')!.content;
const $ = <T extends HTMLElement>(selector: string): T => document.querySelector<T>(selector)!;
const alertBox = $<HTMLDivElement>("#alert");
const statusLine = $<HTMLParagraphElement>("#status");
const viewForm = $<HTMLFormElement>("#view");
const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

// What the list shows lives in the page's URL, so a reload or a shared link shows the same.
const VIEW_DEFAULTS: Record<string, string> = { status: "all", sort: "created", order: "desc", q: "", tag: "", limit: "20" };
// The list shown (none: every list's tasks), also in the page's URL.
const currentList = (): string | null => new URLSearchParams(location.search).get("list_id");

let api: TaskApi | null = null;

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | boolean> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === true) element.setAttribute(name, "");
    else if (value !== false) element.setAttribute(name, value);
  }
  element.append(...children);
  return element;
}

function showError(message: string): void {
  alertBox.textContent = message;
  alertBox.hidden = false;
}

function announce(message: string): void {
  statusLine.textContent = message;
}

/** Runs what the person asked for; any failure is said on the page, never a blank screen. */
async function attempt(action: () => Promise<void>): Promise<void> {
  alertBox.hidden = true;
  alertBox.textContent = "";
  try {
    await action();
  } catch (error) {
    if (error instanceof ApiError || error instanceof NetworkError) showError(error.message);
    else showError(`Something went wrong in this page: ${String(error)}`);
    if (error instanceof ApiError && error.status === 401) await showSignedOut();
  }
}

function viewParams(): URLSearchParams {
  const current = new URLSearchParams(location.search);
  const query = new URLSearchParams();
  for (const [name, fallback] of Object.entries(VIEW_DEFAULTS)) {
    const value = current.get(name) ?? fallback;
    if (value) query.set(name, value);
  }
  const offset = current.get("offset");
  if (offset && offset !== "0") query.set("offset", offset);
  const list = current.get("list_id");
  if (list) query.set("list_id", list);
  // In the order people choose, from the top (moving up is moving up), the top level; each
  // task's subtasks come under it.
  if (query.get("sort") === "position") {
    query.set("order", "asc");
    query.set("parent_id", "none");
  }
  return query;
}

function setView(query: URLSearchParams): void {
  history.pushState(null, "", `${location.pathname}?${query}`);
}

function fillViewForm(query: URLSearchParams): void {
  for (const name of Object.keys(VIEW_DEFAULTS)) {
    const field = viewForm.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement;
    field.value = query.get(name) ?? "";
  }
}

const toLocalInput = (iso: string | null): string => {
  if (!iso) return "";
  const date = new Date(iso);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
};
const fromLocalInput = (value: string): string | null => (value ? new Date(value).toISOString() : null);
const tagList = (value: string): string[] =>
  value
    .split(",")
    .map((tag) => tag.trim())
    .filter(Boolean);

function prioritySelect(selected: Priority): HTMLSelectElement {
  const select = h("select", { name: "priority" });
  for (const value of ["none", "low", "medium", "high"] as const) {
    select.append(h("option", { value, selected: value === selected }, value[0].toUpperCase() + value.slice(1)));
  }
  return select;
}

// "Manual" (sort=position): the tree, each level in the order the person chose, reordered by
// drag and drop or by the Move up / Move down buttons (the keyboard's way).
const ordered = (): boolean => (new URLSearchParams(location.search).get("sort") ?? VIEW_DEFAULTS.sort) === "position";

/** Puts `task` after `afterId` among its siblings (null: first), and shows the list again. */
async function moveTask(task: Task, afterId: number | null): Promise<void> {
  try {
    await api!.move(task.id, task.version, { parent_id: task.parent_id, after_id: afterId });
  } finally {
    await loadTasks({ keepViewForm: true });
  }
  announce(`Moved “${task.title}”.`); // once the list shows it
}

function orderControls(task: Task, siblings: Task[]): HTMLButtonElement[] {
  const index = siblings.findIndex((sibling) => sibling.id === task.id);
  const up = h("button", { type: "button", id: `up-${task.id}`, "aria-label": `Move “${task.title}” up`, disabled: index <= 0 }, "↑");
  const down = h(
    "button",
    { type: "button", id: `down-${task.id}`, "aria-label": `Move “${task.title}” down`, disabled: index >= siblings.length - 1 },
    "↓",
  );
  up.addEventListener("click", () => attempt(() => moveTask(task, index >= 2 ? siblings[index - 2].id : null)));
  down.addEventListener("click", () => attempt(() => moveTask(task, siblings[index + 1].id)));
  return [up, down];
}

/** Drag a task onto a sibling: it takes that sibling's place (the others make way). */
function draggable(item: HTMLLIElement, task: Task, siblings: Task[]): void {
  item.draggable = true;
  item.addEventListener("dragstart", (event) => {
    event.stopPropagation();
    event.dataTransfer!.setData("text/plain", String(task.id));
    event.dataTransfer!.effectAllowed = "move";
  });
  item.addEventListener("dragover", (event) => {
    event.stopPropagation();
    event.preventDefault();
  });
  item.addEventListener("drop", (event) => {
    event.stopPropagation();
    event.preventDefault();
    const from = siblings.findIndex((sibling) => String(sibling.id) === event.dataTransfer!.getData("text/plain"));
    const to = siblings.findIndex((sibling) => sibling.id === task.id);
    if (from < 0 || from === to) return; // not one of this level's tasks
    const afterId = to > from ? siblings[to].id : to > 0 ? siblings[to - 1].id : null;
    void attempt(() => moveTask(siblings[from], afterId));
  });
}

function subtaskForm(task: Task, item: HTMLLIElement): HTMLFormElement {
  const form = h(
    "form",
    { class: "subtask", "aria-label": `Add a subtask to “${task.title}”`, "data-parent-id": String(task.id) },
    h("input", { name: "title", required: true, "aria-label": `Subtask of “${task.title}”` }),
    h("button", { type: "submit" }, "Add subtask"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const title = formValues(form).title.trim();
    void attempt(async () => {
      await api!.create({ title, parent_id: task.id, time_zone: timeZone });
      form.remove();
      await loadTasks({ keepViewForm: true });
      announce(`Added “${title}” under “${task.title}”.`);
    });
  });
  item.append(form);
  return form;
}

/** In "Manual", each task's subtasks under it, level by level (at most four below the top). */
async function showSubtasks(items: HTMLLIElement[], tasks: Task[]): Promise<void> {
  await Promise.all(
    tasks.map(async (task, index) => {
      if (!task.subtask_count) return;
      const query = new URLSearchParams({ parent_id: String(task.id), sort: "position", limit: "100" });
      const page = await api!.list(query);
      const children = page.tasks.map((child) => taskItem(child, page.tasks));
      items[index].append(h("ul", { class: "subtasks", "aria-label": `Subtasks of “${task.title}”` }, ...children));
      await showSubtasks(children, page.tasks);
    }),
  );
}

function taskItem(task: Task, siblings: Task[] = []): HTMLLIElement {
  const checkboxId = `done-${task.id}`;
  const checkbox = h("input", { type: "checkbox", id: checkboxId, checked: task.completed });
  checkbox.addEventListener("change", () =>
    attempt(async () => {
      try {
        const toggled = await api!.toggle(task.id, task.version);
        announce(`“${toggled.title}” is ${toggled.completed ? "done" : "pending again"}.`);
      } finally {
        await loadTasks();
      }
    }),
  );
  const meta: (Node | string)[] = [];
  if (task.priority !== "none") meta.push(`${task.priority} priority`);
  if (task.due_at) {
    const due = new Date(task.due_at).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    meta.push(`${meta.length ? " · " : ""}due ${due}`);
  }
  for (const tag of task.tags) meta.push(" ", h("span", { class: "tag" }, tag));
  if (task.subtask_count) {
    const done = task.subtask_count - task.open_subtask_count;
    meta.push(`${meta.length ? " · " : ""}${done} of ${task.subtask_count} subtasks done`);
  }
  const addSubtask = h(
    "button",
    { type: "button", class: "add-subtask", "aria-label": `Add a subtask to “${task.title}”` },
    "+ Subtask",
  );
  const edit = h("button", { type: "button", "aria-label": `Edit “${task.title}”` }, "Edit");
  const remove = h("button", { type: "button", "aria-label": `Delete “${task.title}”` }, "Delete");
  const item = h(
    "li",
    { class: task.completed ? "completed" : "", "data-task-id": String(task.id) },
    h(
      "div",
      { class: "task" },
      checkbox,
      h("label", { for: checkboxId, class: "title" }, task.title),
      h("span", { class: "meta" }, ...meta),
      ...(ordered() ? orderControls(task, siblings) : []),
      addSubtask,
      edit,
      remove,
    ),
  );
  if (ordered()) draggable(item, task, siblings);
  addSubtask.addEventListener("click", () => {
    const form = item.querySelector<HTMLFormElement>(":scope > form.subtask") ?? subtaskForm(task, item);
    form.querySelector("input")!.focus();
  });
  edit.addEventListener("click", () => {
    if (!item.querySelector("form")) item.append(editForm(task));
    item.querySelector<HTMLInputElement>('input[name="title"]')!.focus();
  });
  remove.addEventListener("click", () =>
    attempt(async () => {
      try {
        await api!.remove(task.id, task.version);
        announce(`Deleted “${task.title}”.`);
      } finally {
        await loadTasks();
      }
    }),
  );
  return item;
}

/** The edit form keeps the version it was read at: saving a task changed elsewhere since is
 * a 412, shown to the person with the other version, and the draft stays in the form. */
function editForm(task: Task): HTMLFormElement {
  let version = task.version;
  const form = h(
    "form",
    { class: "edit", "aria-label": `Edit “${task.title}”` },
    h("label", {}, "Title", h("input", { name: "title", value: task.title, required: true })),
    h("label", { class: "wide" }, "Description", h("textarea", { name: "description", rows: "2" }, task.description ?? "")),
    h("label", {}, "Priority", prioritySelect(task.priority)),
    h("label", {}, "Due", h("input", { name: "due", type: "datetime-local", value: toLocalInput(task.due_at) })),
    h("label", {}, "Tags", h("input", { name: "tags", value: task.tags.join(", ") })),
    h("button", { type: "submit" }, "Save"),
    h("button", { type: "button", class: "cancel" }, "Cancel"),
  );
  form.querySelector(".cancel")!.addEventListener("click", () => {
    form.remove();
    if (staleList) void attempt(() => loadTasks({ keepViewForm: true }));
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    const changes = {
      title: String(fields.get("title")),
      description: String(fields.get("description")) || null,
      priority: String(fields.get("priority")) as Priority,
      due_at: fromLocalInput(String(fields.get("due"))),
      tags: tagList(String(fields.get("tags"))),
    };
    void attempt(async () => {
      try {
        const saved = await api!.update(task.id, version, changes);
        announce(`Saved “${saved.title}”.`);
        await loadTasks();
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 412) throw error;
        const current = await api!.get(task.id);
        version = current.version; // a second Save is a deliberate overwrite of what is there now
        showError(
          `“${task.title}” was changed in another tab or device while you were editing it; ` +
            `it now reads “${current.title}”. Your changes are still in the form: ` +
            `Save again to replace that version with yours, or Cancel to keep it.`,
        );
      }
    });
  });
  return form;
}

/** The list as the page's URL asks for it; `keepViewForm` for a reload the person did not
 * ask for (another tab's change), which must not undo choices they have not applied yet. */
async function loadTasks({ keepViewForm = false } = {}): Promise<void> {
  staleList = false;
  const query = viewParams();
  if (!keepViewForm) fillViewForm(query);
  const [page] = await Promise.all([api!.list(query), loadLists()]);
  const list = $<HTMLUListElement>("#tasks");
  // Keyboard users keep their place: the control that had focus has it again if still shown.
  const focused = document.activeElement?.id;
  // A subtask being typed survives the list being shown again (another change arrived).
  const drafts = [...list.querySelectorAll<HTMLFormElement>("form.subtask")].map((form) => ({
    parent: form.dataset.parentId,
    title: form.querySelector("input")!.value,
    focused: form.contains(document.activeElement),
  }));
  const items = page.tasks.map((task) => taskItem(task, page.tasks));
  list.replaceChildren(...items);
  if (ordered()) await showSubtasks(items, page.tasks);
  for (const draft of drafts) {
    const item = list.querySelector<HTMLLIElement>(`li[data-task-id="${draft.parent}"]`);
    if (!item) continue;
    item.querySelector<HTMLButtonElement>(":scope > .task > button.add-subtask")!.click();
    const input = item.querySelector<HTMLInputElement>(":scope > form.subtask input")!;
    input.value = draft.title;
    if (draft.focused) input.focus();
  }
  if (focused) document.getElementById(focused)?.focus();
  const offset = Number(query.get("offset") ?? 0);
  $("#summary").textContent =
    page.total === 0
      ? "No tasks to show."
      : page.tasks.length === 0
        ? `No tasks on this page (${page.total} in all).`
        : `Showing ${offset + 1}–${offset + page.tasks.length} of ${page.total}`;
  for (const [button, target] of [
    [$<HTMLButtonElement>("#previous"), page.previous],
    [$<HTMLButtonElement>("#next"), page.next],
  ] as const) {
    button.disabled = target === null;
    button.onclick = () => {
      if (!target) return;
      const next = viewParams();
      next.set("offset", target.searchParams.get("offset") ?? "0");
      setView(next);
      void attempt(loadTasks);
    };
  }
}

/** The sidebar: the person's lists with their counts; choosing one shows its tasks, and a
 * task added then goes into it. */
async function loadLists(): Promise<void> {
  const lists = await api!.lists();
  const chosen = currentList();
  const all = h("button", { type: "button", "aria-current": chosen === null ? "true" : "false" }, "All tasks");
  all.addEventListener("click", () => chooseList(null));
  const items = [h("li", {}, all)];
  for (const taskList of lists) {
    const choose = h(
      "button",
      {
        type: "button",
        "aria-current": String(chosen === String(taskList.id)),
        "aria-label": `${taskList.name}, ${taskList.pending_count} pending`,
      },
      taskList.name,
      h("span", { class: "count" }, String(taskList.pending_count)),
    );
    choose.addEventListener("click", () => chooseList(taskList.id));
    const item = h("li", {}, choose);
    if (!taskList.inbox) {
      const remove = h("button", { type: "button", "aria-label": `Delete the list “${taskList.name}” and its tasks` }, "×");
      remove.addEventListener("click", () =>
        attempt(async () => {
          await api!.deleteList(taskList);
          announce(`Deleted the list “${taskList.name}”.`);
          if (currentList() === String(taskList.id)) chooseList(null);
          else await loadTasks({ keepViewForm: true });
        }),
      );
      item.append(remove);
    }
    items.push(item);
  }
  $("#list-links").replaceChildren(...items);
}

function chooseList(id: number | null): void {
  const next = viewParams();
  next.delete("offset");
  if (id === null) next.delete("list_id");
  else next.set("list_id", String(id));
  setView(next);
  void attempt(loadTasks);
}

$<HTMLFormElement>("#new-list").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target as HTMLFormElement;
  const { name } = formValues(form);
  void attempt(async () => {
    const made = await api!.createList(name.trim());
    form.reset();
    announce(`Added the list “${made.name}”.`);
    chooseList(made.id);
  });
});

// The open event stream: a change made elsewhere (another tab, device, the assistant) shows
// here without a reload, and a reminder shows when it fires.
let events: AbortController | null = null;
let reloading: ReturnType<typeof setTimeout> | null = null;
let staleList = false;

function listen(): void {
  events?.abort();
  events = new AbortController();
  void api!.streamEvents((message) => {
    if (message.event === "reminder.due") remind(JSON.parse(message.data) as TaskEvent);
    // A burst of changes (a tag renamed on fifty tasks) reloads the list once; not under an
    // open edit or subtask form, whose draft would go: then when it closes (a stale save is a 412).
    if (reloading === null) {
      reloading = setTimeout(() => {
        reloading = null;
        if (!api) return;
        if (document.querySelector("form.edit, form.subtask")) staleList = true;
        else void attempt(() => loadTasks({ keepViewForm: true }));
      }, 100);
    }
  }, events.signal);
}

function remind(event: TaskEvent): void {
  const title = event.data.title ?? "a task";
  const box = $("#reminder");
  box.textContent = `Reminder: ${title}${event.late ? " (sent late: the service was away)" : ""}`;
  box.hidden = false;
  if ("Notification" in window && Notification.permission === "granted") {
    new Notification("Reminder", { body: title, tag: event.id });
  }
}

$("#notify").addEventListener("click", () => {
  if ("Notification" in window) void Notification.requestPermission();
});

// The assistant: each message's answer streams into the log as it is written, the tools it
// used listed under it; what it changed reaches the list through the event stream.
let conversationId: number | null = null;

function chatEntry(role: "user" | "assistant", text: string): HTMLLIElement {
  const entry = h("li", { class: role }, h("span", { class: "text" }, text));
  $("#chat-log").append(entry);
  entry.scrollIntoView({ block: "nearest" });
  return entry;
}

const TOOL_WORDS: Record<string, string> = {
  add_task: "added a task",
  list_tasks: "looked at your tasks",
  get_task: "read a task",
  update_task: "changed a task",
  complete_task: "marked a task",
  delete_task: "deleted a task",
  list_tags: "looked at your tags",
  list_lists: "looked at your lists",
  create_list: "made a list",
  move_task: "moved a task",
  get_stats: "counted your tasks",
};

$<HTMLFormElement>("#chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target as HTMLFormElement;
  const message = formValues(form).message.trim();
  if (!message) return;
  form.reset();
  chatEntry("user", message);
  const entry = chatEntry("assistant", "…");
  const text = entry.querySelector<HTMLSpanElement>(".text")!;
  const tools = h("span", { class: "tools" });
  entry.append(tools);
  let written = "";
  const send = form.querySelector<HTMLButtonElement>('button[type="submit"]')!;
  send.disabled = true; // one message at a time: the conversation answers them in turn
  void attempt(async () => {
    try {
      const answer = await api!.chat(message, conversationId, timeZone, {
        onConversation: (id) => (conversationId = id),
        onDelta: (delta) => {
          written += delta;
          text.textContent = written;
        },
        onToolCall: (call) => {
          const failed = "error" in call.result;
          tools.append(h("span", {}, `${failed ? "could not do: " : "✓ "}${TOOL_WORDS[call.tool] ?? call.tool}`), " ");
        },
      });
      text.textContent = answer.response;
      if (answer.tool_calls.length) await loadTasks({ keepViewForm: true });
    } catch (error) {
      text.textContent = "(no answer)";
      throw error;
    } finally {
      send.disabled = false;
    }
  });
});

$("#chat-new").addEventListener("click", () => {
  conversationId = null;
  $("#chat-log").replaceChildren();
  announce("A new conversation: the assistant starts afresh.");
});

async function showSignedOut(): Promise<void> {
  events?.abort();
  events = null;
  conversationId = null;
  $("#chat-log").replaceChildren();
  $("#reminder").hidden = true;
  api = null;
  // Nothing of the last person's stays in the page (a shared computer).
  $("#tasks").replaceChildren();
  $("#list-links").replaceChildren();
  $("#summary").textContent = "";
  $("#who").textContent = "";
  $("#signed-in").hidden = true;
  $("#signed-out").hidden = false;
}

async function showSignedIn(user: { id: string; email: string; name: string }): Promise<void> {
  api = new TaskApi(apiUrl, user.id);
  $("#who").textContent = user.name ? `${user.name} (${user.email})` : user.email;
  $("#signed-out").hidden = true;
  $("#signed-in").hidden = false;
  listen();
  await loadTasks();
}

async function start(): Promise<void> {
  const { data, error } = await authClient.getSession();
  if (error) throw new ApiError(error.status, `Could not ask the sign-in service: ${error.message ?? error.statusText}`);
  if (data) await showSignedIn(data.user);
  else await showSignedOut();
}

function formValues(form: HTMLFormElement): Record<string, string> {
  return Object.fromEntries([...new FormData(form)].map(([name, value]) => [name, String(value)]));
}

$<HTMLFormElement>("#sign-up").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target as HTMLFormElement;
  const { name, email, password } = formValues(form);
  void attempt(async () => {
    const { error } = await authClient.signUp.email({ name, email, password });
    if (error) throw new ApiError(error.status, `Could not create the account: ${error.message ?? error.statusText}`);
    form.reset();
    await start();
  });
});

$<HTMLFormElement>("#sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target as HTMLFormElement;
  const { email, password } = formValues(form);
  void attempt(async () => {
    const { error } = await authClient.signIn.email({ email, password });
    if (error) throw new ApiError(error.status, `Could not sign in: ${error.message ?? error.statusText}`);
    form.reset();
    await start();
  });
});

$("#sign-out").addEventListener("click", () =>
  attempt(async () => {
    await authClient.signOut();
    await showSignedOut();
    announce("Signed out.");
  }),
);

$<HTMLFormElement>("#add").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target as HTMLFormElement;
  const sent = formValues(form);
  const { title, priority, due, remind, tags } = sent;
  // Cleared as the task is sent, not when the answer comes: on a slow network the person
  // is already typing the next one, which the answer must not wipe. A failed create gives
  // the form back what was sent, unless something new has been typed into it meanwhile.
  form.reset();
  const cleared = formValues(form);
  void attempt(async () => {
    let task: Task;
    try {
      task = await api!.create({
        title,
        priority: priority as Priority,
        due_at: fromLocalInput(due),
        remind_at: fromLocalInput(remind),
        tags: tagList(tags),
        time_zone: timeZone,
        ...(currentList() ? { list_id: Number(currentList()) } : {}),
      });
    } catch (error) {
      if (JSON.stringify(formValues(form)) === JSON.stringify(cleared)) fillForm(form, sent);
      throw error;
    }
    announce(`Added “${task.title}”.`);
    await loadTasks();
  });
});

function fillForm(form: HTMLFormElement, values: Record<string, string>): void {
  for (const [name, value] of Object.entries(values)) {
    const field = form.elements.namedItem(name);
    if (field instanceof HTMLInputElement || field instanceof HTMLSelectElement) field.value = value;
  }
}

viewForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(formValues(viewForm))) if (value) query.set(name, value);
  const list = currentList(); // the list chosen stays chosen
  if (list) query.set("list_id", list);
  setView(query);
  void attempt(loadTasks);
});

window.addEventListener("popstate", () => {
  if (api) void attempt(loadTasks);
});

void attempt(start);
