module rolltrace.local/labapp

go 1.22
