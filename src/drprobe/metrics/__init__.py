"""drprobe.metrics."""
