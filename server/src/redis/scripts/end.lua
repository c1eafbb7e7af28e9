-- ARGV: P, id, epoch.
local st = hold(skey(ARGV[2]), ARGV[3])
if st ~= 0 then return st end
drop_session(ARGV[2])
return 0
