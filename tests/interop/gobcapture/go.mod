module gobcapture

go 1.27
