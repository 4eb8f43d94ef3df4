"""Train and evaluate a recbole-earn or RecBole model: `python run_earn.py --model=SASRec --dataset=ml-100k`.
See `python run_earn.py --help`."""

from recbole_earn.cli import main

if __name__ == "__main__":
    main()
