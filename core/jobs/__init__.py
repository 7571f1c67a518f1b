"""Jobs: the library's record of training runs, the hosts they run on, and the runners that start them."""
