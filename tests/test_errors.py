import pickle

from alan.errors import DataError


def test_data_error_survives_a_process_boundary():
    # errors raised in a worker process (synth --workers) are pickled back to the parent
    e = pickle.loads(pickle.dumps(DataError("Videos/a.avi", "decodes to 3 frames but FileList.csv says 5")))
    assert isinstance(e, DataError) and str(e) == "Videos/a.avi: decodes to 3 frames but FileList.csv says 5"
    assert e.problem == "decodes to 3 frames but FileList.csv says 5" and e.path.name == "a.avi"
    assert str(pickle.loads(pickle.dumps(DataError(None, "no path")))) == "no path"
