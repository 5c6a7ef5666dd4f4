"""What a run hands over: its front and answer, exported models and the HTML report."""
