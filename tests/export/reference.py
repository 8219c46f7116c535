"""The in-process model's answers, which every exported/served answer is compared with."""

from dataclasses import dataclass

import numpy as np

from tfsoft.config import load_config
from tfsoft.data import Ragged, query_features
from tfsoft.runs import check_vocabularies, load_run_model, prepare_data, RunPaths


@dataclass
class InProcess:
    prepared: object
    model: object
    max_history: int

    @classmethod
    def load(cls, run_dir):
        paths = RunPaths(run_dir)
        config = load_config(paths.config)
        prepared = prepare_data(config.data)
        check_vocabularies(paths, prepared)
        return cls(prepared, load_run_model(config, prepared, paths.checkpoint("best")), config.data.max_history)

    def queries(self, count=8, start=0):
        """Raw user ids and raw histories (oldest first) of real test queries."""
        test = self.prepared.split.test
        rows = list(range(start, start + count))
        users = self.prepared.users.ids(test.user[rows])
        histories = [self.prepared.items.ids(test.history[i]) for i in rows]
        return users, histories

    def top_k(self, users, histories, k, exclude=None):
        """Exact top-k raw item ids (OOV never returned; ``exclude`` raw ids removed)."""
        user_index = self.prepared.users.lookup(users)
        history = Ragged.from_rows([self.prepared.items.lookup(h) for h in histories])
        query = self.model(query_features(user_index, history, self.max_history)).numpy()
        scores = query @ self.model.candidate_embeddings().numpy().T
        scores[:, 0] = -np.inf
        for row, items in enumerate(exclude or []):
            scores[row, self.prepared.items.lookup(items)] = -np.inf
            scores[row, 0] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [self.prepared.items.ids(row) for row in top], np.take_along_axis(scores, top, axis=1)
