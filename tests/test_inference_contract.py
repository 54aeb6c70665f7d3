"""The inference contract's error classifier, on the shapes Triton really produces: gRPC
and HTTP status spellings, a model's stable code wrapped by an ensemble, a full queue, an
unreachable server. (Against a real Triton: test_gateway_outages, test_enhance_robustness,
test_batch_robustness.) And the repository API's counters, summed over loaded versions."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from inference.errors import (
    BAD_INPUT_CODES,
    BadInput,
    Overloaded,
    Unavailable,
    classify,
    model_code,
    status_of,
)

WRAPPED = ("in ensemble 'pcb_inspect', Failed to process the request(s) for model 'pcb_preprocess_0_1', "
           "message: image_aspect_ratio: 4000x100 is a strip: the longest side may be at most 20 times the shortest")


def exc(msg: str, status: str | None) -> InferenceServerException:
    return InferenceServerException(msg=msg, status=status)


@pytest.mark.parametrize("status", ["StatusCode.INVALID_ARGUMENT", "400"])
def test_a_refused_input_keeps_the_models_code_however_it_is_wrapped(status):
    e = classify(exc(WRAPPED, status), "pcb_inspect")
    assert isinstance(e, BadInput) and not e.retryable
    assert e.code == "image_aspect_ratio" and e.message.startswith("4000x100 is a strip")


def test_status_decides_not_the_words():
    # a code-like word in a message with a retryable status is still retryable
    e = classify(exc("detector_failed: invalid_image: nothing", "StatusCode.INTERNAL"))
    assert isinstance(e, Unavailable) and e.retryable
    # an INVALID_ARG refusal without a known code still fails the request, not the service
    e = classify(exc("something odd", "StatusCode.INVALID_ARGUMENT"))
    assert isinstance(e, BadInput) and e.code == "invalid_image"


def test_full_queue_unreachable_and_timeout():
    full = classify(exc("Exceeds maximum queue size", "StatusCode.UNAVAILABLE"))
    assert isinstance(full, Overloaded) and full.code == "inference_overloaded" and full.retryable
    down = classify(exc("failed to connect to all addresses", "StatusCode.UNAVAILABLE"))
    assert isinstance(down, Unavailable) and down.code == "inference_unavailable"
    late = classify(exc("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"))
    assert isinstance(late, Unavailable)
    assert status_of(exc("x", None)) == "UNKNOWN"


def test_every_code_is_found_as_a_token_only():
    for code in BAD_INPUT_CODES:
        assert model_code(f"message: {code}: details")[0] == code
    assert model_code("not_an_invalid_image: x")[0] is None  # part of another word
    assert model_code("the invalid_image code")[0] is None  # no colon: not a code


def test_a_service_code_is_the_services_fault_whatever_status_it_travels_with():
    wrapped = "in ensemble 'pcb_dual_inspect', invalid_verdict: 7 is not a verdict of this taxonomy"
    e = classify(exc(wrapped, "StatusCode.INVALID_ARGUMENT"))
    assert isinstance(e, Unavailable) and e.retryable and e.code == "invalid_verdict"
    e = classify(exc("message: restorer_failed: out of memory", "StatusCode.INTERNAL"))
    assert e.code == "restorer_failed"


def test_an_answer_that_does_not_fit_is_a_retryable_service_error():
    import numpy as np

    from inference import results

    class Answer:  # a class id this taxonomy does not have
        def as_numpy(self, name):
            return {"DETECTIONS": np.array([[[1, 2, 3, 4, 0.9, 99]]], np.float32)}.get(name, np.zeros((1, 1)))

    with pytest.raises(Unavailable) as e:
        results.parsed(results.side, Answer())
    assert e.value.code == "inference_bad_answer"


def test_counters_are_summed_over_the_loaded_versions():
    from inference.repository_api import ModelStats, RepositoryAPI

    api = RepositoryAPI("127.0.0.1:1")  # never called: the answer is Triton's, stubbed
    # two versions served during a canary; gRPC's JSON spells 64-bit counters as strings
    api.statistics = lambda model: {"model_stats": [{"version": "1", "inference_count": "7", "execution_count": "3"},
                                                    {"version": "2", "inference_count": 5, "execution_count": 5},
                                                    {"version": "3"}]}  # loaded, nothing served yet
    assert api.counts("pcb_detector") == ModelStats(inference_count=12, execution_count=8)
    api.close()
