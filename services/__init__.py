"""HTTP services: a shared kit and one small app per recommender family."""
