"""The learning algorithms (TensorFlow only; never imports gymnasium). Importing it has no side effects."""
