"""Next-basket recommendations (CASE) over each user's versioned purchase-day history."""
