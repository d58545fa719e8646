# Stage 12, the last: scaling laws over the evaluation summary (paper §3, Eqs. 2-3, Figs. 1, 2, 7,
# Table 1). One job: every model's rectified and power-law fits with bootstrap intervals,
# the held-out check, the extrapolation table and the three figures, all in the HTML report.
# The models of config models.outside (evaluated as they are, kind outside in the summary)
# are no points of any fit.


rule scaling:
    input:
        summary=f"{RESULTS}/eval/summary.parquet",
    output:
        fits=f"{RESULTS}/scaling/fits.json",
        fits_table=report(
            f"{RESULTS}/scaling/fits.csv",
            caption="../report/scaling/fits.rst",
            category="Scaling laws",
            labels={"item": "fitted parameters"},
        ),
        fits_md=f"{RESULTS}/scaling/fits.md",
        heldout_table=report(
            f"{RESULTS}/scaling/heldout.csv",
            caption="../report/scaling/heldout.rst",
            category="Scaling laws",
            labels={"item": "held-out prediction"},
        ),
        heldout_md=f"{RESULTS}/scaling/heldout.md",
        extrapolation_table=report(
            f"{RESULTS}/scaling/extrapolation.csv",
            caption="../report/scaling/extrapolation.rst",
            category="Scaling laws",
            labels={"item": "extrapolation (Table 1)"},
        ),
        extrapolation_md=f"{RESULTS}/scaling/extrapolation.md",
        fig1=report(
            f"{RESULTS}/scaling/fig1.png",
            caption="../report/scaling/fig1.rst",
            category="Scaling laws",
            labels={"item": "Fig. 1: fits per model"},
        ),
        fig1_pdf=f"{RESULTS}/scaling/fig1.pdf",
        fig2=report(
            f"{RESULTS}/scaling/fig2.png",
            caption="../report/scaling/fig2.rst",
            category="Scaling laws",
            labels={"item": "Fig. 2: all models, extrapolated"},
        ),
        fig2_pdf=f"{RESULTS}/scaling/fig2.pdf",
        fig7=report(
            f"{RESULTS}/scaling/fig7.png",
            caption="../report/scaling/fig7.rst",
            category="Scaling laws",
            labels={"item": "Fig. 7: rectified vs power law"},
        ),
        fig7_pdf=f"{RESULTS}/scaling/fig7.pdf",
        counts=f"{RESULTS}/scaling/counts.json",
    log:
        f"{RESULTS}/logs/scaling.log",
    conda:
        "../envs/main.yaml"
    # the models' fits run in parallel (their bootstrap refits are most of the stage)
    threads: 2
    resources:
        **job_resources("scaling"),
    params:
        **stage_params("scaling", "scaling"),
    shell:
        STAGE_SHELL
