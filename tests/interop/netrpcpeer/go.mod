module netrpcpeer

go 1.22
