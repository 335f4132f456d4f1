"""Linear probes shared by the speed-probe scripts: how much of a quantity an observation holds."""

import numpy as np


def held_out_r_squared(xs: list[np.ndarray], ys: list[np.ndarray], columns: slice, alpha: float) -> float:
    """Mean over episodes of R^2 on that episode of a ridge regression (penalty ``alpha``) fitted on the others.

    Args:
        xs: per episode, the (T, D) observations.
        ys: per episode, the (T,) quantity to predict.
        columns: which observation columns the probe reads.
        alpha: ridge penalty, on standardised columns.
    """
    scores = []
    for held in range(len(ys)):
        rest = [i for i in range(len(ys)) if i != held]
        train_x = np.concatenate([xs[i] for i in rest])[:, columns]
        train_y = np.concatenate([ys[i] for i in rest])
        test_x, test_y = xs[held][:, columns], ys[held]
        mean, scale = train_x.mean(0), train_x.std(0) + 1e-6
        a, b = (train_x - mean) / scale, (test_x - mean) / scale
        a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
        w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ train_y)
        scores.append(1 - ((b @ w - test_y) ** 2).sum() / ((test_y - test_y.mean()) ** 2).sum())
    return float(np.mean(scores))
