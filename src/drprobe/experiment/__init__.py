"""drprobe.experiment."""
