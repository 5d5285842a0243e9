"""Sequential recommender service (SASRec + LTE prefix token)."""
