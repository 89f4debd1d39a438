-- Write new jobs, all or none: -1 and the id when a job id is taken; else 1 and, per job,
-- 0 (written as given) or the stored fields of the job that holds its unique key.
-- ARGV: prefix, now, n, job fields (12 each)
local now = ARGV[2]
local jobs = parse_jobs(4, tonumber(ARGV[3]))
local taken = check_jobs(jobs)
if taken then return {-1, taken} end
local out = write_jobs(jobs, now)
wake()
return {1, out}
