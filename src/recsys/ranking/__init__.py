"""What every offline evaluation stands on, below the parts: the temporal split and the
ranking task (split), the metrics on a model's aligned vectors (metrics) and the
parameter search on the validation split (search). The batch's holdout, gate and tuning
use them; evaluation runners and their reports stand on them."""
