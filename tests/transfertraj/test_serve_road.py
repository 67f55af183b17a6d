"""The served pyfunc of a model with the road input answers TR with the drive graph it was logged with.

The model is the registry tests' tiny one (GENERATED features, answers not meant to be good) with the road
input added and its road head set to trust the road offset fully, so the offset shows in the answers; the
roads are the REAL OSM roads of the central Porto box (context_roads, delta-rs), the trips REAL Porto trips
of the bundled sample, thinned to every 8th fix as a TR request sends them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.transfertraj.registry_fixtures import features, porto_trips, register, settings_for, train
from tests.transfertraj.test_trip_page import write_lake_roads
from transfertraj.core.geo import haversine_m

pytestmark = (
    pytest.mark.slow
)  # a model registered with a city's drive graph, and the gate's graph read from the lake: the slow tier (CI runs it)

MODEL = "models:/transfertraj-base@champion"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from transfertraj import registry
    from transfertraj.model.checkpoint import load_checkpoint, load_model
    from transfertraj.model.transfertraj import with_road_input

    home = tmp_path_factory.mktemp("road_home")
    settings = settings_for(home)
    feats = features(40)
    plain = train(home / "ckpt", feats)
    model = with_road_input(load_model(plain)[0])
    with torch.no_grad():
        model.head_road.bias.fill_(1.0)
    state = load_checkpoint(plain)
    state.update(model=model.state_dict(), model_args=model.args.to_dict())
    road_ckpt = home / "road" / "best.pt"
    road_ckpt.parent.mkdir()
    torch.save(state, road_ckpt)
    write_lake_roads(settings)
    register(settings, road_ckpt, feats)
    return registry.load(MODEL, settings).unwrap_python_model()


def test_the_model_carries_its_road_graph_and_tr_answers_follow_it(served):
    assert served.spec["cities"]["porto"]["roads_artifact"] == "roads_porto"
    assert served.road_graphs["porto"].n_nodes > 1000
    trips = porto_trips(3)
    sparse = trips[trips.groupby("trip_id").cumcount() % 8 == 0]
    with_roads = served.predict(None, sparse, params={"task": "tr", "mu": 8})
    graphs, served.road_graphs = served.road_graphs, {}
    try:
        without = served.predict(None, sparse, params={"task": "tr", "mu": 8})
    finally:
        served.road_graphs = graphs
    assert len(with_roads) == len(without) > 0
    moved = haversine_m(with_roads["pred_lon"], with_roads["pred_lat"], without["pred_lon"], without["pred_lat"])
    assert np.nanmax(moved) > 10  # the road path leaves the straight line somewhere in central Porto
    assert (moved < 1e-6).any()  # ... and not where no path was found or the trip leaves the box
    tp = served.predict(None, trips, params={"task": "tp"})
    assert len(tp) == 15  # other tasks unchanged: no road offset enters


def test_the_gate_scores_a_road_reading_network_along_the_lake_roads(tmp_path):
    """The gate scores TR as the model is served: with the lake's drive graph of each city in the features
    when one of the networks reads road offsets, and without building any graph otherwise."""
    from tests.model.generated import tiny_args
    from transfertraj import registry
    from transfertraj.model.transfertraj import TransferTraj

    settings = settings_for(tmp_path)
    write_lake_roads(settings)
    plain = TransferTraj(args=tiny_args())
    road = TransferTraj(args=tiny_args(road_input=True))
    feats = {"city": np.array(["porto", "porto"], dtype=object)}
    assert registry.lake_road_graphs(settings, [plain], feats) is None
    assert registry.lake_road_graphs(None, [road], feats) is None  # no lake to read roads from
    graphs = registry.lake_road_graphs(settings, [plain, road], feats)
    assert set(graphs) == {"porto"} and graphs["porto"].n_nodes > 1000
