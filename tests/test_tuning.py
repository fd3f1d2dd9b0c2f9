from pathlib import Path

from peft import PeftModel

from ragtune.core.adapters import read_card
from ragtune.core.models import load_generator_model


def test_trained_adapter_has_card_and_loads(tiny_adapter: Path):
    card = read_card(tiny_adapter)
    assert card.name == "tiny" and card.base_model == "bundled:smollm2-135m-instruct"
    assert card.n_train + card.n_val == 16 and card.n_val > 0
    assert card.metrics["val_loss"] is not None and card.metrics["val_loss"] < card.metrics["train_loss"] * 2
    assert card.base_model_hash and card.ragtune_version and card.wall_time_s > 0
    assert card.data_counts["loaded"] == 16 and card.data_counts["split_val"] == card.n_val
    assert card.hyperparameters["lr_scheduler"] == "cosine" and "q_proj" in card.hyperparameters["target_modules"]
    assert [h["epoch"] for h in card.history] == list(range(1, len(card.history) + 1))
    assert all(h["val_perplexity"] is not None for h in card.history)
    assert all(0.0 <= (h["format_adherence"] or 0.0) <= 1.0 for h in card.history)
    assert card.history[-1]["format_adherence"] is not None  # generated validation answers were checked
    assert (tiny_adapter / "adapter_model.safetensors").is_file()
    assert not (tiny_adapter / "checkpoints").exists()
    model, _ = load_generator_model("bundled:smollm2-135m-instruct")  # own copy: PEFT edits in place
    assert isinstance(PeftModel.from_pretrained(model, str(tiny_adapter)), PeftModel)
