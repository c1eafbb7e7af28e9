-- ARGV: P, channel, payload, text, cap.
append(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 0
