"""Training loops for the project's own reference models (and, later, distilled students)."""
