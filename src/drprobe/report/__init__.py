"""drprobe.report."""
