-- wrk script: PUT 1 KiB blobs to distinct pre-allocated file ids of volume 1.
-- Each wrk thread gets its own key range so no two requests share a key.
local counter = 0
local thread_base = 0
local threads = {}
local body = string.rep("k", 1024)

function setup(thread)
   thread:set("thread_base", #threads * 100000000 + 1)
   table.insert(threads, thread)
end

function init(args)
   thread_base = thread_base or 1
end

function request()
   counter = counter + 1
   local path = string.format("/%s,%x%08x", os.getenv("KELP_VID") or "1", thread_base + counter, 0x637037d6)
   return wrk.format("PUT", path, {["Content-Type"] = "application/octet-stream"}, body)
end
