-- wrk script for scripts/bench: builds each request from a plan file and prints the result
-- as one JSON line. `scripts/benchlib/plan.py` builds the same requests for the Python
-- generator; keep the two in step.
--
--   wrk -t2 -c64 -d20s -s scripts/bench_load.lua http://127.0.0.1:8000 -- PLAN NTHREADS
--
-- Plan file: one tab-separated directive a line.
--   mode <fixed|callback|lookup|mixed>
--   method M / path P / header NAME VALUE / body B     the request of mode fixed
--   key K                auth key for lookups and submissions
--   submit_body B        body of POST /v1/tasks in mode mixed
--   final_every N        every Nth task gets a final callback on its first visit
--   weights S C L        mixed: S submits, C callbacks, L lookups in every S+C+L requests
--   files URL            base URL of a final callback's result file (URL/files/UPSTREAM/0.png)
--   task ID TOKEN UPSTREAM_ID
--
-- Callback requests are unique: each wrk thread owns the tasks whose index is its thread id
-- modulo the thread count and walks them in rounds, sending progress round+1 (capped at 99),
-- so a task's progress only rises, and no two threads ever send for the same task.

local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local plan = {
  headers = {}, tasks = {}, weights = { 0, 1, 0 }, final_every = 0, files = "http://127.0.0.1:9",
}
local nthreads = 1
local per_thread = 1
local sent_callbacks = 0
local sent = 0

local function split(line)
  local fields = {}
  for field in string.gmatch(line, "([^\t]*)\t?") do
    table.insert(fields, field)
  end
  return fields
end

local function read_plan(path)
  local file = assert(io.open(path, "r"))
  for line in file:lines() do
    local f = split(line)
    local name = f[1]
    if name == "task" then
      table.insert(plan.tasks, { id = f[2], token = f[3], upstream = f[4] })
    elseif name == "header" then
      plan.headers[f[2]] = f[3]
    elseif name == "weights" then
      plan.weights = { tonumber(f[2]), tonumber(f[3]), tonumber(f[4]) }
    elseif name == "final_every" then
      plan.final_every = tonumber(f[2])
    elseif name ~= "" then
      plan[name] = f[2]
    end
  end
  file:close()
end

function init(args)
  read_plan(args[1])
  nthreads = tonumber(args[2])
  per_thread = math.max(1, math.floor(#plan.tasks / nthreads))
  math.randomseed(1000 + tid)
end

local json_headers = { ["Content-Type"] = "application/json" }

local function auth_headers(with_json)
  local headers = { ["Authorization"] = "Bearer " .. plan.key }
  if with_json then
    headers["Content-Type"] = "application/json"
  end
  return headers
end

local function callback()
  local k = sent_callbacks % per_thread
  local round = math.floor(sent_callbacks / per_thread)
  sent_callbacks = sent_callbacks + 1
  local index = k * nthreads + tid -- 0-based
  local task = plan.tasks[index + 1]
  local body
  if plan.final_every > 0 and index % plan.final_every == plan.final_every - 1 and round == 0 then
    body = '{"id":"' .. task.upstream .. '","status":"succeeded","progress":100,'
      .. '"results":[{"url":"' .. plan.files .. '/files/' .. task.upstream .. '/0.png",'
      .. '"content":"Here is the generated image."}],"failure_reason":"","error":""}'
  else
    body = '{"id":"' .. task.upstream .. '","status":"running","progress":'
      .. math.min(99, round + 1) .. "}"
  end
  return wrk.format("POST", "/webhooks/grsai/" .. task.token, json_headers, body)
end

local function lookup()
  local task = plan.tasks[math.random(#plan.tasks)]
  return wrk.format("GET", "/v1/tasks/" .. task.id, auth_headers(false))
end

local function submit()
  return wrk.format("POST", "/v1/tasks", auth_headers(true), plan.submit_body)
end

function request()
  local mode = plan.mode
  sent = sent + 1
  if mode == "callback" then
    return callback()
  elseif mode == "lookup" then
    return lookup()
  elseif mode == "mixed" then
    local w = plan.weights
    local slot = (sent - 1) % (w[1] + w[2] + w[3])
    if slot < w[1] then
      return submit()
    elseif slot < w[1] + w[2] then
      return callback()
    end
    return lookup()
  end
  return wrk.format(plan.method, plan.path, plan.headers, plan.body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean
  ))
end
