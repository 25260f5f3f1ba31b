"""VQAv2 / TextVQA: the EvalAI normalisation and the 10-annotator soft accuracy."""

import pytest

from voco_llama.eval.answers import ScoringError, ScoringWarning
from voco_llama.eval.scorers import score, vqa
from voco_llama.eval.scorers.vqa import vqa_normalize, vqa_soft_accuracy, vqav2_accuracy

EXACT = 1e-9


def test_evalai_normalisation():
    assert vqa_normalize("Two") == "2"  # number words
    assert vqa_normalize("None") == "0"
    assert vqa_normalize("A dog.") == "dog"  # articles and the final period
    assert vqa_normalize("the dog") == vqa_normalize("dog")
    assert vqa_normalize("dont") == "don't"  # contractions
    assert vqa_normalize("Dont!") == "don't"  # glued "!" -> space, then the contraction
    assert vqa_normalize("1,000") == "1000"  # commas are dropped first
    assert vqa_normalize("3.5") == "3.5"  # a period before a digit stays
    assert vqa_normalize("red/white") == "red white"  # glued punctuation becomes a space
    assert vqa_normalize("red / white") == "red white"  # spaced punctuation disappears
    assert vqa_normalize("the man's hat") == "man 's hat"
    assert vqa_normalize("Yes, there is a cat.") == "yes there is cat"


def test_evalai_contraction_table_quirks():
    assert vqa_normalize("yall'll") == "y'all'll" == vqa_normalize("y'allll")
    assert vqa_normalize("couldnt've") == "couldn't've"
    assert vqa_normalize("im") == "im"  # the official "Im" key is capitalised: never matches
    assert vqa_normalize("somebody'd") == "somebodyd"  # the official table maps this one backwards
    assert len(vqa._CONTRACTIONS) == 114  # the official table's 120 minus 4 dead and 2 identity entries


def test_vqa_soft_accuracy_leave_one_out():
    # k of 10 annotators agree with the prediction. Leaving out one of the k: (k-1) matches; leaving
    # out one of the other 10-k: k matches. accuracy = [k*min(1,(k-1)/3) + (10-k)*min(1,k/3)] / 10
    others = ["cat"] * 10
    assert vqa_soft_accuracy("dog", others) == 0.0
    assert vqa_soft_accuracy("dog", ["dog"] + others[:9]) == pytest.approx(0.3, abs=EXACT)  # (0 + 9/3)/10
    assert vqa_soft_accuracy("dog", ["dog"] * 2 + others[:8]) == pytest.approx(0.6, abs=EXACT)  # (2/3 + 16/3)/10
    assert vqa_soft_accuracy("dog", ["dog"] * 3 + others[:7]) == pytest.approx(0.9, abs=EXACT)  # (3*2/3 + 7)/10
    assert vqa_soft_accuracy("dog", ["dog"] * 4 + others[:6]) == 1.0  # (4*1 + 6)/10


def test_vqav2_annotation_file(tmp_path, write_json, answers):
    def ann(qid, golds, answer_type):
        return {
            "question_id": qid,
            "answer_type": answer_type,
            "answers": [{"answer": g, "answer_id": i + 1} for i, g in enumerate(golds)],
        }

    key = write_json(
        tmp_path / "v2_mscoco_val2014_annotations.json",
        {
            "annotations": [
                ann(1, ["2"] * 2 + ["3"] * 8, "number"),
                ann(2, ["dog"] * 3 + ["cat"] * 7, "other"),
                ann(3, ["don't"] * 4 + ["no"] * 6, "other"),
                ann(4, ["red/white"] + ["red"] * 9, "other"),
                ann(5, ["yes"] * 10, "yes/no"),
            ]
        },
    )
    ans = answers(
        tmp_path / "ans.jsonl",
        [
            (1, "two"),  # "2": 2 of 10 -> 0.6
            (2, "A dog."),  # "dog": 3 of 10 -> 0.9
            (3, "dont"),  # "don't": 4 of 10 -> 1.0
            (4, "red white"),  # gold "red/white" normalises to "red white": 1 of 10 -> 0.3
            (5, "no"),  # 0
        ],
    )
    s = score("vqav2", ans, key)
    assert s["score"] == pytest.approx(100 * 2.8 / 5, abs=EXACT)  # 56.0
    assert s["categories"]["number"]["accuracy"] == pytest.approx(60.0, abs=EXACT)
    assert s["categories"]["other"]["accuracy"] == pytest.approx(100 * 2.2 / 3, abs=EXACT)
    assert s["categories"]["yes/no"]["accuracy"] == 0.0


def test_vqav2_generic_key_with_and_without_annotator_answers(tmp_path, write_jsonl, answers):
    key = write_jsonl(
        tmp_path / "key.jsonl",
        [
            {"question_id": 1, "answer": "2", "answers": ["2"] * 2 + ["3"] * 8},
            {"question_id": 2, "answer": "dog"},  # no "answers": ten copies of "dog"
        ],
    )
    ans = answers(tmp_path / "ans.jsonl", [(1, "Two."), (2, "the dog")])
    assert score("vqav2", ans, key)["score"] == pytest.approx(80.0, abs=EXACT)  # (0.6 + 1) / 2


def test_textvqa_matches_llavas_image_id_and_prompt(tmp_path, write_json, answers):
    key = write_json(
        tmp_path / "TextVQA_0.5.1_val.json",
        {
            "data": [
                {"question_id": 100, "image_id": "abc", "question": "What is the brand?", "answers": ["nikon"] * 10},
                {
                    "question_id": 101,
                    "image_id": "abc",
                    "question": "what year is it?",
                    "answers": ["1999"] * 2 + ["1998"] * 8,
                },
            ]
        },
    )
    ans = answers(
        tmp_path / "ans.jsonl",
        [
            # LLaVA's TextVQA file uses the image id as question_id; the question comes from the prompt
            (
                "abc",
                "Nikon",
                "what is the brand?\nReference OCR token: Nikon, camera\n"
                "Answer the question using a single word or phrase.",
            ),  # 1.0
            (101, "1999"),  # plain question id: 2 of 10 -> 0.6
        ],
    )
    assert score("textvqa", ans, key)["score"] == pytest.approx(80.0, abs=EXACT)


def test_vqav2_normalises_only_when_annotators_disagree(tmp_path, write_json, answers):
    # vqaEval.py VQAEval.evaluate: answers are whitespace-stripped; only `if len(set(gtAnswers)) > 1`
    # are processPunctuation and processDigitArticle applied, to the annotator answers and to the
    # prediction. TextVQA's evaluator normalises both always.
    assert vqav2_accuracy("2", ["two"] * 10) == 0.0
    assert vqa_soft_accuracy("2", ["two"] * 10) == 1.0
    assert vqav2_accuracy("dog", ["a dog"] * 10) == 0.0  # all agree: "a dog" is kept
    assert vqav2_accuracy("two", ["2"] * 10) == 1.0  # the converter normalises the prediction
    assert vqav2_accuracy("dog", [" dog\n"] * 10) == 1.0  # whitespace is stripped always
    # disagreeing: processDigitArticle turns the seven "two" into "2" too
    assert vqav2_accuracy("two", ["2"] * 3 + ["two"] * 7) == 1.0
    assert vqav2_accuracy("dog", ["a dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9, abs=EXACT)
    assert vqav2_accuracy("red white", ["red/white"] * 2 + ["red"] * 8) == pytest.approx(0.6, abs=EXACT)
    assert vqav2_accuracy("dont", ["don't"] * 4 + ["no"] * 6) == 1.0  # "'" is no mark: both "don't"
    key = write_json(
        tmp_path / "v2.json",
        {"annotations": [{"question_id": 1, "answer_type": "number", "answers": [{"answer": "two"}] * 10}]},
    )
    assert score("vqav2", answers(tmp_path / "ans.jsonl", [(1, "2")]), key)["score"] == 0.0


# copied from GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py, `self.punct`
OFFICIAL_MARKS = [
    *[";", r"/", "[", "]", '"', "{", "}"],
    *["(", ")", "=", "+", "\\", "_", "-"],
    *[">", "<", "@", "`", ",", "?", "!"],
]


def test_vqav2_punctuation_list_is_the_official_one():
    assert vqa._PUNCTUATION_MARKS == tuple(OFFICIAL_MARKS)


@pytest.mark.parametrize("mark", OFFICIAL_MARKS)
def test_vqav2_each_official_mark_glued_becomes_a_space(mark):
    # seven annotators wrote "x<mark>y", three "z": they disagree, so the evaluator's processPunctuation
    # turns the glued mark into a space and the prediction "x y" matches seven of ten
    assert vqav2_accuracy("x y", [f"x{mark}y"] * 7 + ["z"] * 3) == 1.0
    # spaced, the mark disappears (processDigitArticle then joins the words with one space)
    assert vqav2_accuracy("x y", [f"x {mark} y"] * 7 + ["z"] * 3) == 1.0


@pytest.mark.parametrize(
    "prediction",
    ["8:00", "don't know", "o'clock"],
)
def test_vqav2_colon_and_apostrophe_are_not_marks(prediction):
    # the cases: ten identical annotator answers, the prediction written as they wrote it
    assert vqav2_accuracy(prediction, [prediction] * 10) == 1.0
    # disagreeing annotators: both sides normalised, ":" and "'" kept
    assert vqav2_accuracy(prediction, [prediction] * 7 + ["z"] * 3) == 1.0


def test_vqav2_hyphen_is_a_mark():
    assert vqav2_accuracy("x-ray", ["x-ray"] * 7 + ["xray"] * 3) == 1.0  # all "x ray" but three
    assert vqav2_accuracy("top left", ["top-left"] * 4 + ["left"] * 6) == 1.0


def test_textvqa_duplicate_image_question_is_collapsed_and_missing_skipped(tmp_path, write_json, answers):
    key = write_json(
        tmp_path / "TextVQA_0.5.1_val.json",
        {
            "data": [
                {"question_id": 1, "image_id": "img", "question": "What brand?", "answers": ["nikon"] * 10},
                {"question_id": 2, "image_id": "img", "question": "what brand?", "answers": ["canon"] * 10},
                {"question_id": 3, "image_id": "img2", "question": "What year?", "answers": ["1999"] * 10},
            ]
        },
    )
    prompt = "What brand?\nAnswer the question using a single word or phrase."
    # LLaVA's file: the image id as question_id, the same question twice. eval_textvqa.py keys its
    # annotations by (image, question), so both are scored against the later one's answers.
    ans = answers(tmp_path / "ans.jsonl", [("img", "Nikon", prompt), ("img", "canon", prompt)])
    with pytest.warns(ScoringWarning, match="1 of 3 questions have no answer; they are left out"):
        s = score("textvqa", ans, key)
    assert s["score"] == 50.0 and (s["n_questions"], s["n_scored"]) == (3, 2)
    with pytest.raises(ScoringError, match="answered twice"):
        score("textvqa", answers(tmp_path / "three.jsonl", [("img", "a", prompt)] * 3), key)
    with pytest.warns(ScoringWarning, match="scored as wrong"):
        assert score("textvqa", ans, key, missing="strict")["score"] == pytest.approx(100 / 3, abs=EXACT)
