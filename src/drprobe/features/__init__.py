"""drprobe.features."""
