// The requests agent-chat-ui's `useStream` (@langchain/langgraph-sdk/react, stream.lgp.js and
// ui/manager.js) makes against a LangGraph server, made with the same SDK client, and what came
// back, as one JSON object on stdout for tests/integration/test_langgraph_server_js.py to judge.
//
//   node use_stream_calls.mjs API_URL ASSISTANT_ID QUESTION FOLLOW_UP LONG_QUESTION
//
// The sequence a chat page goes through: GET /info (agent-chat-ui's server check), create a
// thread (submit on a new chat), its history with limit 10 (fetchStateHistory), a resumable run
// streaming values, messages-tuple and custom with on_disconnect "continue" (the modes the
// page reads: `values` and `messages`, plus `custom` for onCustomEvent), the history again
// (finishRun), a second run from the head checkpoint, then a run stopped by the user
// (stop(): the SSE request aborted, then runs.cancel for the stored run id) and joined.
import { randomUUID } from "node:crypto";
import { Client } from "@langchain/langgraph-sdk";

const [apiUrl, assistantId, question, followUp, longQuestion] = process.argv.slice(2);
const client = new Client({ apiUrl, callerOptions: { maxRetries: 0 } });
const STREAM_MODE = ["values", "messages-tuple", "custom"];

function human(text) {
  return { id: randomUUID(), type: "human", content: [{ type: "text", text }] };
}

async function info() {
  const response = await fetch(`${apiUrl}/info`);
  return { status: response.status, body: await response.json() };
}

// One submit: every event as the SDK yields it (name, id, data), and the run it created.
async function submit(threadId, text, { checkpoint, stopWhen } = {}) {
  const controller = new AbortController();
  const run = { created: null, events: [], stopped: false };
  try {
    for await (const part of client.runs.stream(threadId, assistantId, {
      input: { messages: [human(text)] },
      streamMode: STREAM_MODE,
      streamResumable: true,
      onDisconnect: "continue",
      checkpoint,
      signal: controller.signal,
      onRunCreated(meta) {
        run.created = meta;
      },
    })) {
      run.events.push({ event: part.event, id: part.id ?? null, data: part.data });
      if (stopWhen?.(part)) {
        run.stopped = true;
        controller.abort();
      }
    }
  } catch (error) {
    if (!run.stopped) throw error;
  }
  return run;
}

function withoutThreadId(checkpoint) {
  const { thread_id: _, ...rest } = checkpoint;
  return rest;
}

// Each call is named in `step`, so a failure says which call of the sequence it was.
const report = {};
let step = "";
function call(name, promise) {
  step = name;
  return promise;
}

async function main() {
  report.info = await call("GET /info", info());
  const thread = await call("threads.create", client.threads.create({}));
  const threadId = thread.thread_id;
  report.thread = thread;
  report.history_new = await call("threads.getHistory (new thread)", client.threads.getHistory(threadId, { limit: 10 }));
  report.first = await call("runs.stream (first)", submit(threadId, question));
  report.history_after_first = await call("threads.getHistory (after the first run)",
    client.threads.getHistory(threadId, { limit: 10 }));
  const head = withoutThreadId(report.history_after_first[0].checkpoint);
  report.second = await call("runs.stream (second, from the head checkpoint)",
    submit(threadId, followUp, { checkpoint: head }));
  report.history_after_second = await call("threads.getHistory (after the second run)",
    client.threads.getHistory(threadId, { limit: 10 }));

  report.stopped = await call("runs.stream (stopped at the first tool progress)", submit(threadId, longQuestion, {
    stopWhen: (part) => part.event === "custom" && part.data?.agent_ng === "tool_progress",
  }));
  const runId = report.stopped.created.run_id;
  report.cancel = (await call("runs.cancel", client.runs.cancel(threadId, runId))) ?? null;
  report.join = await call("runs.join", client.runs.join(threadId, runId));
  report.stopped_run = await call("runs.get", client.runs.get(threadId, runId));
  report.state_after_stop = await call("threads.getState", client.threads.getState(threadId));
  step = "runs.joinStream (the first run, from its start)";
  report.replay = [];
  for await (const part of client.runs.joinStream(threadId, report.first.created.run_id, { lastEventId: "-1" })) {
    report.replay.push({ event: part.event, id: part.id ?? null });
  }
}

main().then(
  () => process.stdout.write(JSON.stringify(report)),
  (error) => {
    const detail = [error.status, error.text].filter((x) => x != null).join(" ");
    process.stderr.write(`${step}: ${error.name}: ${error.message} ${detail}\n`);
    process.exit(1);
  },
);
