"""Sites: replicating the event log with other sites, and what that looks like."""
