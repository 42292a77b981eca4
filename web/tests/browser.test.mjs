// The demo web app in a real, headless Chromium (Debian's package, driven by playwright-core),
// against the real web service (Better Auth) and the real API on another origin.
//
// tests/test_browser.py starts the services and runs each test on its own; run by hand with
//   WEB_URL=http://localhost:3000 WEB_OTHER_ORIGIN=http://127.0.0.1:3000 \
//   API_URL=http://127.0.0.1:8000 EXPIRING_WEB_URL=... EXPIRING_API_URL=... CHROMIUM=/usr/bin/chromium \
//   node --test tests/browser.test.mjs
// Every test saves a screenshot of each of its pages on failure, into ARTIFACTS.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const env = process.env;
const artifacts = env.ARTIFACTS ?? "test-results/browser";
mkdirSync(artifacts, { recursive: true });
let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: env.CHROMIUM ?? "/usr/bin/chromium",
    // No sandbox: CI runs as root in a container. The rest keeps Chromium off the network.
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run", "--disable-quic"],
  });
});
after(async () => browser?.close());

/** Runs `body` with a fresh browser context; on failure, a screenshot of every page it opened. */
function browserTest(name, body) {
  test(name, async () => {
    const contexts = [];
    const newContext = async () => {
      const context = await browser.newContext({ locale: "en-GB", timezoneId: "Europe/Berlin" });
      context.setDefaultTimeout(10_000);
      contexts.push(context);
      return context;
    };
    try {
      await body(newContext);
    } catch (error) {
      const slug = name.replace(/[^a-z0-9]+/gi, "-").slice(0, 60);
      const pages = contexts.flatMap((context) => context.pages());
      for (const [index, page] of pages.entries()) {
        const path = join(artifacts, `${slug}-${index + 1}.png`);
        await page.screenshot({ path, fullPage: true }).catch(() => {});
        console.error(`screenshot: ${path}`);
      }
      throw error;
    } finally {
      for (const context of contexts) await context.close();
    }
  });
}

const PASSWORD = "correct horse battery";

/** A new person, signed up through the page; their email. */
async function signUp(page, url, name) {
  await page.goto(url);
  const form = page.locator("#sign-up");
  await form.getByLabel("Name").fill(name);
  const email = `${name.toLowerCase()}-${randomBytes(4).toString("hex")}@example.com`;
  await form.getByLabel("Email").fill(email);
  await form.getByLabel("Password").fill(PASSWORD);
  await form.getByRole("button", { name: "Sign up" }).click();
  await page.getByText(`Signed in as ${name}`).waitFor();
  return email;
}

async function signIn(page, email, password) {
  const form = page.locator("#sign-in");
  await form.getByLabel("Email").fill(email);
  await form.getByLabel("Password").fill(password);
  await form.getByRole("button", { name: "Sign in" }).click();
}

async function addTask(page, title, { priority, due, tags } = {}) {
  const form = page.locator("#add");
  await form.getByLabel("Title").fill(title);
  if (priority) await form.getByLabel("Priority").selectOption(priority);
  if (due) await form.getByLabel("Due").fill(due);
  if (tags) await form.getByLabel("Tags").fill(tags);
  await form.getByRole("button", { name: "Add task" }).click();
  await page.getByRole("status").filter({ hasText: `Added “${title}”` }).waitFor();
}

const titles = (page) => page.locator("#tasks label.title").allTextContents();
const alertOf = (page) => page.getByRole("alert");
const isApi = (url) => [env.API_URL, env.EXPIRING_API_URL].some((api) => api && url.startsWith(api));
const apiResponses = (page) => {
  const seen = [];
  page.on("response", (response) => {
    // The task requests (the event stream's own come and go as its token does).
    if (isApi(response.url()) && !new URL(response.url()).pathname.endsWith("/events")) {
      seen.push(`${response.request().method()} ${response.status()}`);
    }
  });
  return seen;
};

browserTest("a new person signs up, adds three tasks, ticks one off, filters, reloads, signs out and in", async (newContext) => {
  const page = await (await newContext()).newPage();
  const email = await signUp(page, env.WEB_URL, "Ada");
  await addTask(page, "Buy milk", { priority: "high", tags: "home, errands" });
  await addTask(page, "Write the quarterly report", { priority: "medium", due: "2030-03-31T17:00", tags: "work" });
  await addTask(page, "Call mum");
  // Ticked off with the keyboard, which keeps its place in the list.
  await page.getByRole("checkbox", { name: "Buy milk" }).focus();
  await page.keyboard.press("Space");
  await page.getByRole("status").filter({ hasText: "“Buy milk” is done" }).waitFor();
  assert.ok(await page.getByRole("checkbox", { name: "Buy milk" }).isChecked());
  assert.equal(await page.evaluate(() => document.activeElement?.id), await page.getByRole("checkbox", { name: "Buy milk" }).getAttribute("id"));
  assert.deepEqual(await titles(page), ["Call mum", "Write the quarterly report", "Buy milk"]);
  await assert.doesNotReject(page.getByText("due 31 Mar 2030, 17:00").waitFor());
  await page.screenshot({ path: join(artifacts, "demo.png"), fullPage: true });

  const view = page.locator("#view");
  await view.getByLabel("Show").selectOption("pending");
  await view.getByRole("button", { name: "Show" }).click();
  await page.getByText("Showing 1–2 of 2").waitFor();
  assert.deepEqual(await titles(page), ["Call mum", "Write the quarterly report"]);

  await page.reload();
  await page.getByText("Showing 1–2 of 2").waitFor();
  assert.deepEqual(await titles(page), ["Call mum", "Write the quarterly report"]);
  assert.equal(await view.getByLabel("Show").inputValue(), "pending");
  assert.ok(await alertOf(page).isHidden());

  // Signed out, the tasks are gone from the page, also after a reload; signed in again, back.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in or create an account" }).waitFor();
  assert.equal(await page.locator("#tasks li").count(), 0);
  await page.reload();
  await page.getByRole("heading", { name: "Sign in or create an account" }).waitFor();
  await signIn(page, email, "not the password");
  await alertOf(page).filter({ hasText: "Could not sign in" }).waitFor();
  await signIn(page, email, PASSWORD);
  await page.getByText("Showing 1–2 of 2").waitFor();
  assert.ok(await alertOf(page).isHidden());
  assert.deepEqual(await titles(page), ["Call mum", "Write the quarterly report"]);
});

browserTest("sorting, search, tags and paging follow X-Total-Count and Link", async (newContext) => {
  const page = await (await newContext()).newPage();
  await signUp(page, env.WEB_URL, "Grace");
  for (const [title, tags] of [["alpha", "work"], ["bravo", ""], ["charlie", "work"], ["delta", ""], ["echo", "work"], ["foxtrot", ""], ["golf", "work"]]) {
    await addTask(page, title, { tags });
  }
  const view = page.locator("#view");
  await view.getByLabel("Sort by").selectOption("title");
  await view.getByLabel("Order").selectOption("asc");
  await view.getByLabel("Per page").selectOption("5");
  await view.getByRole("button", { name: "Show" }).click();
  await page.getByText("Showing 1–5 of 7").waitFor();
  assert.deepEqual(await titles(page), ["alpha", "bravo", "charlie", "delta", "echo"]);
  assert.ok(await page.getByRole("button", { name: "Previous page" }).isDisabled());

  await page.getByRole("button", { name: "Next page" }).click();
  await page.getByText("Showing 6–7 of 7").waitFor();
  assert.deepEqual(await titles(page), ["foxtrot", "golf"]);
  assert.ok(await page.getByRole("button", { name: "Next page" }).isDisabled());
  await page.getByRole("button", { name: "Previous page" }).click();
  await page.getByText("Showing 1–5 of 7").waitFor();

  await view.getByLabel("Tag").fill("work");
  await view.getByRole("button", { name: "Show" }).click();
  await page.getByText("Showing 1–4 of 4").waitFor();
  assert.deepEqual(await titles(page), ["alpha", "charlie", "echo", "golf"]);
  await view.getByLabel("Tag").fill("");
  await view.getByLabel("Search").fill("HARL");
  await view.getByRole("button", { name: "Show" }).click();
  await page.getByText("Showing 1–1 of 1").waitFor();
  assert.deepEqual(await titles(page), ["charlie"]);

  // The browser's Back button returns to the previous view.
  await page.goBack();
  await page.getByText("Showing 1–4 of 4").waitFor();
});

browserTest("a second person in a second browser context sees none of the first one's tasks", async (newContext) => {
  const first = await (await newContext()).newPage();
  await signUp(first, env.WEB_URL, "Alice");
  await addTask(first, "Alice's surprise party");
  const second = await (await newContext()).newPage();
  await signUp(second, env.WEB_URL, "Bob");
  await second.getByText("No tasks to show.").waitFor();
  await addTask(second, "Bob's own task");
  assert.deepEqual(await titles(second), ["Bob's own task"]);
  await first.reload();
  await first.getByText("Showing 1–1 of 1").waitFor();
  assert.deepEqual(await titles(first), ["Alice's surprise party"]);
});

browserTest("a stale edit from another tab shows the conflict and loses neither edit", async (newContext) => {
  const context = await newContext();
  const first = await context.newPage();
  await signUp(first, env.WEB_URL, "Carol");
  await addTask(first, "Plan the trip");
  // The first tab opens the task to edit it, and the person starts typing.
  const responses = apiResponses(first);
  await first.getByRole("button", { name: "Edit “Plan the trip”" }).click();
  const form = first.locator("form.edit");
  await form.getByLabel("Title").fill("Plan the trip to Lisbon");
  await form.getByLabel("Description").fill("flights first");

  const second = await context.newPage(); // same person, same session, another tab
  await second.goto(env.WEB_URL);
  await second.getByRole("button", { name: "Edit “Plan the trip”" }).click();
  await second.locator("form.edit").getByLabel("Title").fill("Plan the trip to Rome");
  await second.locator("form.edit").getByRole("button", { name: "Save" }).click();
  await second.getByRole("status").filter({ hasText: "Saved “Plan the trip to Rome”" }).waitFor();

  // The first tab heard of the change, but keeps the open draft (no reload under it); saving
  // it is the stale edit.
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(await form.getByLabel("Title").inputValue(), "Plan the trip to Lisbon");
  await form.getByRole("button", { name: "Save" }).click();
  await alertOf(first).filter({ hasText: "it now reads “Plan the trip to Rome”" }).waitFor();
  assert.ok(responses.includes("PATCH 412"), responses.join(", "));
  assert.equal(await form.getByLabel("Title").inputValue(), "Plan the trip to Lisbon");
  assert.equal(await form.getByLabel("Description").inputValue(), "flights first");
  await second.reload();
  await second.getByText("Showing 1–1 of 1").waitFor();
  assert.deepEqual(await titles(second), ["Plan the trip to Rome"]);

  // Saving again is a deliberate overwrite of what is there now.
  await form.getByRole("button", { name: "Save" }).click();
  await first.getByRole("status").filter({ hasText: "Saved “Plan the trip to Lisbon”" }).waitFor();
  assert.ok(await alertOf(first).isHidden());
  await second.reload();
  await second.getByText("Showing 1–1 of 1").waitFor();
  assert.deepEqual(await titles(second), ["Plan the trip to Lisbon"]);
});

browserTest("an expired token is replaced and the request retried without the person noticing", async (newContext) => {
  const page = await (await newContext()).newPage();
  const responses = apiResponses(page);
  // Without the event stream, whose reconnect at the token's expiry would fetch the fresh
  // token first: this is about a task request meeting the expired one.
  await page.route((url) => url.pathname.endsWith("/events"), (route) => route.abort());
  await signUp(page, env.EXPIRING_WEB_URL, "Dan");
  await addTask(page, "before the token expires");
  // The tokens of this web service live 3 seconds, and this API allows no leeway.
  await page.waitForTimeout(Number(env.TOKEN_SECONDS ?? 3) * 1000 + 1500);
  await addTask(page, "after the token expired");
  assert.deepEqual(await titles(page), ["after the token expired", "before the token expires"]);
  assert.ok(await alertOf(page).isHidden());
  const unauthorised = responses.indexOf("POST 401");
  assert.ok(unauthorised >= 0, `the API never refused the expired token: ${responses.join(", ")}`);
  assert.equal(responses[unauthorised + 1], "POST 201", responses.join(", "));
});

browserTest("a request from an origin not in CORS_ORIGINS fails, and the page says so", async (newContext) => {
  const page = await (await newContext()).newPage();
  const failed = [];
  page.on("requestfailed", (request) => {
    if (isApi(request.url())) failed.push(request.url());
  });
  // The same web service, reached by another origin, which the API does not allow.
  await signUp(page, env.WEB_OTHER_ORIGIN, "Eve");
  await alertOf(page).filter({ hasText: "Could not reach the task API" }).waitFor();
  const message = await alertOf(page).textContent();
  assert.match(message, /does not allow this page's origin \(http:\/\/127\.0\.0\.1:\d+\) in its CORS_ORIGINS/);
  assert.ok(failed.length > 0, "the browser let the cross-origin request through");
});

browserTest("a 201-character title shows the API's own message and adds nothing", async (newContext) => {
  const page = await (await newContext()).newPage();
  const responses = apiResponses(page);
  await signUp(page, env.WEB_URL, "Frank");
  await page.locator("#add").getByLabel("Title").fill("x".repeat(201));
  await page.locator("#add").getByRole("button", { name: "Add task" }).click();
  await alertOf(page).filter({ hasText: "the request is invalid" }).waitFor();
  const message = await alertOf(page).textContent();
  assert.match(message, /title: String should have at most 200 characters/);
  assert.ok(responses.includes("POST 422"), responses.join(", "));
  // The person's text is still there to shorten, and nothing was added.
  assert.equal((await page.locator("#add").getByLabel("Title").inputValue()).length, 201);
  await page.reload();
  await page.getByText("No tasks to show.").waitFor();
});

browserTest("the add form is cleared when a task is sent, so the next title typed meanwhile survives", async (newContext) => {
  const page = await (await newContext()).newPage();
  await signUp(page, env.WEB_URL, "Grace");
  // A slow network: each create takes 1.5 s to leave the browser.
  await page.route((url) => isApi(url.href), async (route) => {
    if (route.request().method() === "POST") await new Promise((resolve) => setTimeout(resolve, 1500));
    await route.continue();
  });
  const title = page.locator("#add").getByLabel("Title");
  await title.fill("Buy milk");
  await page.locator("#add").getByRole("button", { name: "Add task" }).click();
  assert.equal(await title.inputValue(), "", "the form waited for the answer to clear");
  await title.fill("Call the plumber");
  await page.getByRole("status").filter({ hasText: "Added “Buy milk”" }).waitFor();
  assert.equal(await title.inputValue(), "Call the plumber");
  assert.deepEqual(await titles(page), ["Buy milk"]);
});

browserTest("a change made in one tab shows in another tab of the same person within a second", async (newContext) => {
  const context = await newContext();
  const first = await context.newPage();
  await signUp(first, env.WEB_URL, "Hedy");
  const second = await context.newPage(); // same person, same session, another tab
  const opened = second.waitForResponse((response) => new URL(response.url()).pathname.endsWith("/events"));
  await second.goto(env.WEB_URL);
  await second.getByText("No tasks to show.").waitFor();
  assert.equal((await opened).status(), 200);
  await addTask(first, "Book the tickets");
  // No reload in the second tab: the stream brings the change.
  await second.getByText("Book the tickets").waitFor({ timeout: 1000 });
  await first.getByRole("checkbox", { name: "Book the tickets" }).check();
  await second.locator("li.completed").filter({ hasText: "Book the tickets" }).waitFor({ timeout: 1000 });
});

browserTest("a reminder shows in the page, and as a notification, when it is due", async (newContext) => {
  const context = await newContext();
  await context.grantPermissions(["notifications"], { origin: new URL(env.WEB_URL).origin });
  // Notifications the page raises, recorded (headless Chromium shows none).
  await context.addInitScript(() => {
    const Shown = window.Notification;
    window.shownNotifications = [];
    window.Notification = class extends Shown {
      constructor(title, options) {
        super(title, options);
        window.shownNotifications.push({ title, body: options?.body });
      }
    };
  });
  const page = await context.newPage();
  await signUp(page, env.WEB_URL, "Ida");
  // Due in three to four seconds, on a whole second (the field takes seconds, no less), in
  // the page's own time zone (Europe/Berlin).
  const due = new Date(Math.ceil((Date.now() + 3000) / 1000) * 1000);
  const local = due.toLocaleString("sv-SE", { timeZone: "Europe/Berlin" }).replace(" ", "T");
  await page.locator("#add").getByLabel("Remind me").fill(local);
  await addTask(page, "Stand up and stretch");
  const reminder = page.locator("#reminder");
  assert.ok(await reminder.isHidden(), "the reminder showed before its time");
  await reminder.filter({ hasText: "Reminder: Stand up and stretch" }).waitFor({ timeout: 8000 });
  assert.ok(Date.now() >= due.getTime() - 50, "the reminder showed before its time");
  assert.deepEqual(await page.evaluate(() => window.shownNotifications), [
    { title: "Reminder", body: "Stand up and stretch" },
  ]);
});

browserTest("the assistant adds a task from the chat panel and says what is overdue", async (newContext) => {
  const context = await newContext();
  // Every text the answer shows, in order: it streams in, so some are the start of the last.
  await context.addInitScript(() => {
    window.answerTexts = [];
    new MutationObserver(() => {
      const shown = document.querySelectorAll("#chat-log .assistant .text");
      if (shown.length) window.answerTexts.push(shown[shown.length - 1].textContent);
    }).observe(document, { subtree: true, childList: true, characterData: true });
  });
  const page = await context.newPage();
  await signUp(page, env.WEB_URL, "Grace");
  const chat = page.locator("#chat-form");
  await chat.getByLabel("Message").fill("add milk to my list for tomorrow");
  await chat.getByRole("button", { name: "Send" }).click();
  const answer = "I added “Milk” to your list for tomorrow at 9:00.";
  await page.locator("#chat-log .assistant").filter({ hasText: answer }).waitFor();
  await page.locator("#chat-log .assistant").filter({ hasText: "✓ added a task" }).waitFor();
  const texts = await page.evaluate(() => window.answerTexts);
  assert.ok(
    texts.some((shown) => shown && shown !== answer && answer.startsWith(shown)),
    `the answer did not stream in: ${JSON.stringify(texts)}`,
  );
  // The list shows the task the assistant added, due tomorrow at 9 in the person's zone.
  await page.locator("#tasks li").filter({ hasText: "Milk" }).filter({ hasText: "09:00" }).waitFor();

  await chat.getByLabel("Message").fill("what is overdue?");
  await chat.getByRole("button", { name: "Send" }).click();
  await page.locator("#chat-log .assistant").filter({ hasText: "Nothing is overdue." }).waitFor();
  assert.equal(await page.locator("#chat-log .user").count(), 2);
  assert.ok(await alertOf(page).isHidden());
  await page.screenshot({ path: join(artifacts, "chat.png"), fullPage: true });
});

browserTest("a person makes a list, adds a task to it, and moves between their lists", async (newContext) => {
  const page = await (await newContext()).newPage();
  await signUp(page, env.WEB_URL, "Lin");
  await addTask(page, "Water the plants"); // into the Inbox
  const lists = page.locator("#lists");
  await lists.getByRole("button", { name: /^Inbox/ }).waitFor();
  const form = page.locator("#new-list");
  await form.getByLabel("New list").fill("Work");
  await form.getByRole("button", { name: "Add list" }).click();
  await page.getByRole("status").filter({ hasText: "Added the list “Work”" }).waitFor();
  // The new list is chosen: its (empty) tasks show, and a task added goes into it.
  await page.getByText("No tasks to show.").waitFor();
  await addTask(page, "Write the report");
  assert.deepEqual(await titles(page), ["Write the report"]);
  await lists.getByRole("button", { name: "Work, 1 pending" }).waitFor();
  await lists.getByRole("button", { name: "Inbox, 1 pending" }).click();
  await page.locator("#tasks label.title").filter({ hasText: "Water the plants" }).waitFor();
  assert.deepEqual(await titles(page), ["Water the plants"]);
  await lists.getByRole("button", { name: "All tasks" }).click();
  await page.getByText("Showing 1–2 of 2").waitFor();
  // Deleting the list deletes its task; the Inbox cannot be deleted (it has no button).
  assert.equal(await lists.getByRole("button", { name: /Delete the list “Inbox”/ }).count(), 0);
  await lists.getByRole("button", { name: "Delete the list “Work” and its tasks" }).click();
  await page.getByRole("status").filter({ hasText: "Deleted the list “Work”" }).waitFor();
  await page.getByText("Showing 1–1 of 1").waitFor();
  assert.deepEqual(await titles(page), ["Water the plants"]);
  assert.ok(await alertOf(page).isHidden());
});

browserTest("in the manual order a person nests subtasks and reorders by drag and drop and with the keyboard", async (newContext) => {
  const page = await (await newContext()).newPage();
  await signUp(page, env.WEB_URL, "Ord");
  for (const title of ["Pack", "Book train", "Water plants"]) await addTask(page, title);
  await page.locator("#view").getByLabel("Sort by").selectOption("position");
  await page.locator("#view").getByRole("button", { name: "Show" }).click();
  await page.getByRole("button", { name: "Move “Pack” up" }).waitFor();
  const topLevel = () => page.locator("#tasks > li > .task label.title").allTextContents();
  assert.deepEqual(await topLevel(), ["Pack", "Book train", "Water plants"]);

  // The keyboard's way: focus "Move down", press Enter; the focus stays on the moved task's button.
  await page.getByRole("button", { name: "Move “Pack” down" }).focus();
  await page.keyboard.press("Enter");
  await page.getByRole("status").filter({ hasText: "Moved “Pack”" }).waitFor();
  assert.deepEqual(await topLevel(), ["Book train", "Pack", "Water plants"]);
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("aria-label")), "Move “Pack” down");
  await page.getByRole("button", { name: "Move “Water plants” up" }).click();
  await page.getByRole("status").filter({ hasText: "Moved “Water plants”" }).waitFor();
  assert.deepEqual(await topLevel(), ["Book train", "Water plants", "Pack"]);
  assert.ok(await page.getByRole("button", { name: "Move “Book train” up" }).isDisabled());

  // Drag and drop: "Pack" dropped on "Book train" takes its place, first.
  // The page's event stream shows each change again 100 ms after it arrives: drag once the last
  // move's has come, so the list is not redrawn under the mouse. Then by the mouse, step by
  // step, as a person drags (Chromium's HTML5 drag and drop needs the moves).
  await page.waitForTimeout(500);
  await page.locator("#tasks > li[data-task-id]").filter({ hasText: "Pack" }).locator(".title").hover();
  await page.mouse.down();
  const to = await page.locator("#tasks > li[data-task-id]").filter({ hasText: "Book train" }).locator(".title").boundingBox();
  await page.mouse.move(to.x + 10, to.y + to.height / 2, { steps: 10 });
  await page.mouse.move(to.x + 12, to.y + to.height / 2, { steps: 2 });
  await page.mouse.up();
  await page.getByRole("status").filter({ hasText: "Moved “Pack”" }).waitFor();
  await page.waitForFunction(() => document.querySelector("#tasks > li label.title")?.textContent === "Pack");
  assert.deepEqual(await topLevel(), ["Pack", "Book train", "Water plants"]);

  // Subtasks, nested under their task, in their own order.
  for (const title of ["Passport", "Charger"]) {
    await page.getByRole("button", { name: "Add a subtask to “Pack”" }).click();
    await page.getByLabel("Subtask of “Pack”").fill(title);
    await page.getByRole("button", { name: "Add subtask" }).click();
    await page.getByRole("status").filter({ hasText: `Added “${title}” under “Pack”` }).waitFor();
  }
  const subtasks = page.getByRole("list", { name: "Subtasks of “Pack”" });
  await subtasks.getByText("Charger").waitFor();
  assert.deepEqual(await subtasks.locator("label.title").allTextContents(), ["Passport", "Charger"]);
  await page.getByRole("button", { name: "Move “Charger” up" }).click();
  await page.getByRole("status").filter({ hasText: "Moved “Charger”" }).waitFor();
  assert.deepEqual(await subtasks.locator("label.title").allTextContents(), ["Charger", "Passport"]);
  await page.getByText("0 of 2 subtasks done").waitFor();
  // Ticking the task off ticks its subtasks off with it.
  await page.getByRole("checkbox", { name: "Pack", exact: true }).check();
  await page.getByText("2 of 2 subtasks done").waitFor();
  assert.ok(await page.getByRole("checkbox", { name: "Passport" }).isChecked());
  // The order is kept: a reload shows it.
  await page.reload();
  await page.getByRole("button", { name: "Move “Pack” up" }).waitFor();
  assert.deepEqual(await topLevel(), ["Pack", "Book train", "Water plants"]);
  assert.ok(await alertOf(page).isHidden());
});
