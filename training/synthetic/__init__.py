"""The synthetic mine-microseismic benchmark (numpy/scipy only, never TensorFlow).

sites      -- site profiles, and the site distribution each wide recording chain is drawn from
sources    -- ground-motion physics of each signal family
recording  -- what a site's sensor and ADC make of ground motion and background
generate   -- labelled event windows and continuous streams, written to disk
stream     -- an endless continuous stream with injected events (board simulator, demo)
"""
