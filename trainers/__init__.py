"""How a candidate is judged: tasks, the proxy trainer."""
