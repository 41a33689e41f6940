"""Report stage: text tables and figures of every experiment."""
