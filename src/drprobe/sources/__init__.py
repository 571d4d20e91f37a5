"""drprobe.sources."""
