"""The page's forms (Flask-WTF): each POST form carries the session's CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from edge.vocabulary import LABELS


class LoginForm(FlaskForm):
    username = StringField("user", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("password", validators=[DataRequired(), Length(max=1024)])


class RelabelForm(FlaskForm):
    label = SelectField("new label", choices=list(LABELS), validators=[DataRequired()])
    note = TextAreaField("note", validators=[Length(max=2000)])


class LogoutForm(FlaskForm):
    """No fields: the token alone, so that another site cannot log a user out."""
