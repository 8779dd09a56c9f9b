"""Where the work runs: backend interfaces and their local and AWS implementations, free of Django."""
