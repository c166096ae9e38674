"""What the tests share: fake models and servers, child processes, and the system parts they need."""
