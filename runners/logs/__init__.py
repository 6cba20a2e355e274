"""What a run reports: TensorBoard and evaluations.csv (``run_logger``), the best-policy GIFs (``media``), and
the filter that keeps TensorFlow's C++ notes off stderr (``stderr_filter``)."""
