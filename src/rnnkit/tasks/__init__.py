"""Tasks: a model together with its data, its loss and its run directory, one module per task.

    rnnkit.tasks.lm         character-level language model      LMTask
    rnnkit.tasks.memory     the generated memory tasks          MemoryTask
    rnnkit.tasks.caption    image captioning                     CaptionTask
    rnnkit.tasks.classify   sentence classification              ClassifyTask, PretrainTask
    rnnkit.tasks.translate  encoder-decoder translation          TranslateTask
    rnnkit.tasks.compare    every cell on one of the above, side by side (`rnnkit compare`)

This layer sits above `models/`, `train/` and `data/` (it puts them together) and below `report/` and
`cli/` (which print what it computes); it imports from neither of those two.

Each `<Task>Task` class is what `rnnkit.train.loop.fit` trains (`task`, `modules`, `train_step`,
`evaluate`, `extra_state`, `load_extra_state`). Each module has a `load_run(run_dir, which=None)` that
rebuilds a trained run from its directory (`which`: "best" or "last"; default best when there is one),
raising `rnnkit.errors.UserError` with one line when the directory holds no such run. The package names
it `load_<module>_run`:

    load_lm_run(dir)         -> (CharLM, CharVocab, checkpoint meta, checkpoint name)
    load_memory_run(dir)     -> (MemoryTask with the run's weights, checkpoint meta)
    load_caption_run(dir)    -> (Captioner, Vocab, run config)
    load_classify_run(dir)   -> (SentenceClassifier, Tokenizer, Vocab, n-gram table or None, labels,
                                 display names, run config)
    load_translate_run(dir)  -> (Seq2Seq, source Vocab, target Vocab, run config)

Models come back in eval mode. The helpers a task's data and decoding need (`lm.load_corpus`,
`caption.decode_batches`, `classify.Encoded`, `translate.translate_tokens`, ...) are in its module.
"""

from rnnkit.tasks.caption import CaptionTask
from rnnkit.tasks.caption import load_run as load_caption_run
from rnnkit.tasks.classify import ClassifyTask, PretrainTask
from rnnkit.tasks.classify import load_run as load_classify_run
from rnnkit.tasks.lm import LMTask
from rnnkit.tasks.lm import load_run as load_lm_run
from rnnkit.tasks.memory import MemoryTask
from rnnkit.tasks.memory import load_run as load_memory_run
from rnnkit.tasks.translate import TranslateTask
from rnnkit.tasks.translate import load_run as load_translate_run

__all__ = ["CaptionTask", "ClassifyTask", "LMTask", "MemoryTask", "PretrainTask", "TranslateTask",
           "load_caption_run", "load_classify_run", "load_lm_run", "load_memory_run",
           "load_translate_run"]
