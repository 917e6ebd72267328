module geepeer

go 1.27
